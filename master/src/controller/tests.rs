//! The controller's protocol, without a cluster: scripted Kafka offsets and
//! scripted task ends, over a real workspace, checkpoint and file sink.
