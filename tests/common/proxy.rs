//! A TCP proxy that a test can switch off, to make PostgreSQL or Redis
//! unreachable for one worker without touching the shared servers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use audit_worker::config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP proxy in front of one upstream, switched on and off by the test.
pub struct TcpProxy {
    pub port: u16,
    enabled: Arc<AtomicBool>,
    /// Connections clients opened, forwarded or refused: how often they
    /// tried the upstream.
    connections: Arc<AtomicUsize>,
    /// Bumped when the proxy is switched off, which cuts every open connection.
    cut: watch::Sender<u64>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream` ("host:port").
    pub async fn start(upstream: &str, enabled: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let flag = Arc::new(AtomicBool::new(enabled));
        let connections = Arc::new(AtomicUsize::new(0));
        let (cut, _) = watch::channel(0u64);
        let (upstream, accepting, cuts, opened) = (
            upstream.to_owned(),
            flag.clone(),
            cut.clone(),
            connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                opened.fetch_add(1, Ordering::SeqCst);
                if !accepting.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            enabled: flag,
            connections,
            cut,
        }
    }

    /// `127.0.0.1:port`, where clients reach the proxy.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Points the worker's database URL (its database kept) through the proxy.
    pub fn carry_postgres(&self, config: &mut Config) {
        let name = config.database.url.database_name().to_owned();
        config.database.url = format!("postgres://postgres@{}/{name}", self.address())
            .parse()
            .expect("a PostgreSQL URL through the proxy");
    }

    /// Points the worker's Redis URL through the proxy.
    pub fn carry_redis(&self, config: &mut Config) {
        config.redis.url = format!("redis://{}/0", self.address())
            .parse()
            .expect("a Redis URL through the proxy");
    }

    /// Stops forwarding: open connections are cut and new ones refused.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Connections opened through the proxy so far, refused ones included.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Forwards again: new connections reach the upstream.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }
}
