//! Generates the tonic/prost code from spate.proto with protox, a pure-Rust
//! protobuf compiler, so no machine needs protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=spate.proto");
    let descriptors = protox::compile(["spate.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
