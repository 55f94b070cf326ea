//! A real HTTP webhook receiver on loopback: records every request and answers
//! with the statuses it is told to (then 200), or never answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Script {
    /// Answered in order, one per request; 200 once exhausted.
    statuses: Vec<u16>,
    /// This many requests, the first ones, are never answered.
    hang: usize,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// Starts on a free port; must run inside an actix system. The first
    /// `hang` requests get no answer at all.
    pub fn start(statuses: &[u16], hang: usize) -> Self {
        let script = Arc::new(Mutex::new(Script {
            statuses: statuses.to_vec(),
            hang,
            received: Vec::new(),
        }));
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

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
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
    let (status, hang) = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
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
        (status, hang)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("x-request-id", format!("rcv-{}", uuid::Uuid::new_v4())))
        .finish()
}
