//! A TCP proxy in front of LocalStack that a test can cut and restore.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub url: String,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    /// Start a proxy on 127.0.0.1:0 (on its own thread) forwarding to `target` (host:port).
    pub fn start(target: String) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (u2, g2) = (up.clone(), generation.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((mut client, _)) = listener.accept().await else { return };
                    if !u2.load(Ordering::SeqCst) {
                        drop(client); // refuse: close at once
                        continue;
                    }
                    let target = target.clone();
                    let mut cut = g2.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {} // cut: drop both ends
                        }
                    });
                }
            });
        });
        Proxy { url, up, generation }
    }
    /// Refuse new connections and drop open ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
