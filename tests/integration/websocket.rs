//! A WebSocket session through the proxy: the HTTP/1.1 upgrade handshake is relayed and the
//! connection then carries frames both ways, against a real WebSocket server and client.

use crate::common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    // A real WebSocket echo server.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(message) = ws.next().await {
            match message.unwrap() {
                Message::Close(_) => break,
                m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await.unwrap(),
                _ => {}
            }
        }
    });

    let proxy = start_proxy(&simple_config("inbound", upstream, "http1")).await;
    let addr = proxy.listener_addr("main").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/chat"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);

    ws.send(Message::text("hello through hoptrace"))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello through hoptrace")
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
    server.await.unwrap();
    proxy.shutdown().await;
}
