//! The development broker: librdkafka's mock cluster, a real Kafka-protocol
//! server kept in memory. It is for tests, the demo and trying Spate without
//! Kafka; it is no production broker (small retention, data lost on exit).
//!
//! rdkafka's `MockCluster` does not expose the handle needed to change the
//! advertised address, so this wraps the same C API directly.

use std::ffi::{CStr, CString};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka_sys as rdsys;

use crate::error::{EngineError, Result};

/// The id of the mock cluster's single broker.
const BROKER_ID: i32 = 1;

pub struct DevBroker {
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    /// The client whose background thread serves the cluster; dropped last.
    _client: BaseProducer,
    bootstrap: String,
}

// SAFETY: librdkafka's mock cluster API is thread safe: every call is
// forwarded to the cluster's own thread through its operation queue.
unsafe impl Send for DevBroker {}
unsafe impl Sync for DevBroker {}

impl DevBroker {
    /// Starts a one-broker cluster listening on 127.0.0.1 on an ephemeral port.
    pub fn start() -> Result<Self> {
        let client: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| broker_error(e.to_string()))?;
        // SAFETY: the client outlives the cluster (see Drop).
        let cluster = unsafe { rdsys::rd_kafka_mock_cluster_new(client.client().native_ptr(), 1) };
        if cluster.is_null() {
            return Err(broker_error("librdkafka could not start its mock cluster"));
        }
        // SAFETY: cluster is valid; the returned string lives as long as it.
        let bootstrap = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: cluster is valid. Consumer groups form at once instead of after 3 s.
        unsafe { rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        Ok(DevBroker {
            cluster,
            _client: client,
            bootstrap,
        })
    }

    /// Where clients on this machine reach the broker directly.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The mock does not take CreateTopics over the protocol; topics are made
    /// through its own API (unknown topics are auto-created on first use).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let name = CString::new(topic).map_err(|_| broker_error("topic name has a NUL byte"))?;
        // SAFETY: cluster is valid; name outlives the call.
        let code = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1)
        };
        if code != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(broker_error(format!(
                "cannot create topic '{topic}': {:?}",
                rdsys::RDKafkaErrorCode::from(code)
            )));
        }
        Ok(())
    }

    /// Makes metadata responses name `host:port` as the broker's address, for
    /// clients that reach it through a forwarded listener.
    pub fn advertise(&self, host: &str, port: u16) -> Result<()> {
        let host = CString::new(host).map_err(|_| broker_error("host has a NUL byte"))?;
        // SAFETY: cluster is valid; host outlives the call (librdkafka copies it).
        unsafe {
            rdsys::rd_kafka_mock_broker_set_host_port(
                self.cluster,
                BROKER_ID,
                host.as_ptr(),
                i32::from(port),
            )
        };
        Ok(())
    }

    /// Takes the broker down (connections refused) or back up, for fault tests.
    pub fn set_up(&self, up: bool) -> Result<()> {
        // SAFETY: cluster is valid.
        let code = unsafe {
            if up {
                rdsys::rd_kafka_mock_broker_set_up(self.cluster, BROKER_ID)
            } else {
                rdsys::rd_kafka_mock_broker_set_down(self.cluster, BROKER_ID)
            }
        };
        if code != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(broker_error(format!(
                "cannot change broker state: {code:?}"
            )));
        }
        Ok(())
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        // SAFETY: created in start() and destroyed once, before the client.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) };
        self._client.flush(std::time::Duration::from_millis(0)).ok();
    }
}

fn broker_error(message: impl Into<String>) -> EngineError {
    EngineError::Kafka {
        bootstrap: "development broker".to_string(),
        message: message.into(),
    }
}
