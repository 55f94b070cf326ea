//! A real HTTP webhook receiver on loopback: records every request and answers
//! with the statuses it is told to (then 200), or never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the receiver read it: the Standard Webhooks headers and the body.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub authorization: String,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl Received {
    /// Whether the Standard Webhooks signature is valid for `secret`
    /// (`whsec_…`), checked as a receiver would.
    pub fn signed_with(&self, secret: &str) -> bool {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.signature
            .split(' ')
            .any(|signature| signature == expected)
    }
}

#[derive(Default)]
struct Script {
    /// Answered in order, one per request; 200 once exhausted.
    statuses: Vec<u16>,
    /// This many requests, the first ones, are never answered.
    hang: usize,
    /// Every answer waits this long.
    delay: Duration,
    received: Vec<Received>,
}

/// A webhook receiver on a free loopback port, answering as scripted.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// Starts on a free port; must run inside an actix system. The first
    /// `hang` requests get no answer at all.
    pub fn start(statuses: &[u16], hang: usize) -> Self {
        Self::with_script(Script {
            statuses: statuses.to_vec(),
            hang,
            ..Script::default()
        })
    }

    /// Starts on a free port; must run inside an actix system. Answers 200
    /// to every request, each after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self::with_script(Script {
            delay,
            ..Script::default()
        })
    }

    fn with_script(script: Script) -> Self {
        let script = Arc::new(Mutex::new(script));
        let shared = script.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind the receiver");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            script,
        }
    }

    /// Down for `outage` from now (each connection closed at once, nothing
    /// read or answered, as a server whose process is gone behind a proxy),
    /// then up on the same port, answering 200; must run inside an actix system.
    pub fn down_for(outage: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        actix_web::rt::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let up_at = tokio::time::Instant::now() + outage;
            while let Ok(accepted) = tokio::time::timeout_at(up_at, listener.accept()).await {
                drop(accepted);
            }
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(shared.clone()))
                    .default_service(web::to(receive))
            })
            .workers(1)
            .listen(listener.into_std().unwrap())
            .expect("serve on the receiver's port");
            server.run().await
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            script,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits (`within` at most) until at least `count` requests have
    /// arrived; returns every request received by then.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        super::wait_until(within, &format!("{count} requests received"), || {
            let received = self.received();
            async move { (received.len() >= count).then_some(received) }
        })
        .await
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    script: web::Data<Arc<Mutex<Script>>>,
) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, hang, delay) = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            content_type: header("content-type"),
            authorization: header("authorization"),
            body: body.to_vec(),
            at: std::time::Instant::now(),
        });
        let status = if script.statuses.is_empty() {
            200
        } else {
            script.statuses.remove(0)
        };
        let hang = script.hang > 0;
        script.hang = script.hang.saturating_sub(1);
        (status, hang, script.delay)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(delay).await;
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("x-request-id", format!("rcv-{}", uuid::Uuid::new_v4())))
        .finish()
}

/// A receiver that reads the first request in full and then closes its
/// connection without answering, as a server closing an idle keep-alive
/// connection just as the client reuses it does; it answers 200 to every
/// later request. Plain TCP: no HTTP server lets a handler drop its connection.
pub struct DroppingReceiver {
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl DroppingReceiver {
    /// Starts on a free port; must run inside an actix system.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        actix_web::rt::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = counted.clone();
                actix_web::rt::spawn(async move {
                    while read_request(&mut stream).await.is_some() {
                        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DroppingReceiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            requests,
        }
    }

    /// Requests read so far, the dropped first one included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and `content-length` body); `None` once the
/// client has closed the connection.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<()> {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        read.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while read.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        read.extend_from_slice(&chunk[..n]);
    }
    Some(())
}
