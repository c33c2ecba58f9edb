//! `driver broker`: serves the development broker (librdkafka's mock
//! cluster) on a real address. The mock listens on 127.0.0.1 only, so this
//! forwards a listening socket to it and has it advertise the given address.

use std::net::SocketAddr;

use spate_engine::kafka::DevBroker;
use tokio::net::{TcpListener, TcpStream};

use crate::DriverError;

/// A development broker reachable at `listen`, announcing itself as `advertise`.
pub struct ServedBroker {
    pub broker: DevBroker,
    pub listen: SocketAddr,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Drop for ServedBroker {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

pub async fn serve(
    listen: SocketAddr,
    advertise: Option<&str>,
) -> Result<ServedBroker, DriverError> {
    let broker = DevBroker::start()?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| DriverError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let listen = listener
        .local_addr()
        .map_err(|e| DriverError::Usage(e.to_string()))?;
    let advertised = match advertise {
        Some(a) => a.to_string(),
        None if listen.ip().is_unspecified() => format!("localhost:{}", listen.port()),
        None => listen.to_string(),
    };
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            DriverError::Usage(format!("--advertise '{advertised}': expected HOST:PORT"))
        })?;
    broker.advertise(&host, port)?;
    let target = broker.bootstrap_servers().to_string();
    let forwarder = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(ServedBroker {
        broker,
        listen,
        forwarder,
    })
}

/// Parses `name:partitions` (partitions default 4).
pub fn parse_topic(spec: &str) -> Result<(String, i32), DriverError> {
    let (name, partitions) = match spec.split_once(':') {
        Some((n, p)) => (
            n,
            p.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                DriverError::Usage(format!(
                    "--topic '{spec}': partitions must be a positive number"
                ))
            })?,
        ),
        None => (spec, 4),
    };
    if name.is_empty() {
        return Err(DriverError::Usage(format!(
            "--topic '{spec}': the topic needs a name"
        )));
    }
    Ok((name.to_string(), partitions))
}
