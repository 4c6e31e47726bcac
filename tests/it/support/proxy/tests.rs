//! The fault proxy on its own, in front of a tiny answering server: bytes pass both ways, a
//! blackhole holds them, a reset lands mid-answer, a cut ends open connections, and the silent
//! listener accepts and never answers.

use std::io::ErrorKind;

use super::*;

/// Longest any wait here may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// A server on 127.0.0.1 answering every chunk it reads with `size` bytes.
async fn answerer(size: usize) -> (SocketAddr, DropGuard) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        while let Some(Ok((mut socket, _))) = until.run_until_cancelled(listener.accept()).await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                    if socket.write_all(&vec![b'x'; size]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, stop.drop_guard())
}

/// Sends one request and reads until the answer's `size` bytes, an error or the end; what
/// arrived and how it ended.
async fn ask(stream: &mut TcpStream, size: usize) -> (usize, Option<ErrorKind>) {
    stream.write_all(b"?").await.expect("send");
    let mut got = 0;
    let mut buf = vec![0u8; CHUNK];
    while got < size {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("stuck after {got} of {size} bytes"),
            Ok(Ok(0)) => return (got, Some(ErrorKind::UnexpectedEof)),
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) => return (got, Some(e.kind())),
        }
    }
    (got, None)
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.expect("connect")
}

#[tokio::test]
async fn passes_bytes_both_ways_and_holds_them_while_blackholed() {
    let (upstream, _guard) = answerer(1000).await;
    let proxy = FaultProxy::start(upstream).await;
    let mut stream = connect(&proxy).await;
    assert_eq!(ask(&mut stream, 1000).await, (1000, None));

    proxy.set(|f| f.blackhole = true);
    stream.write_all(b"?").await.expect("send");
    let mut buf = [0u8; 16];
    let held = tokio::time::timeout(QUIET, stream.read(&mut buf)).await;
    assert!(held.is_err(), "bytes passed the blackhole: {held:?}");

    proxy.clear();
    let mut answer = vec![0u8; 1000];
    tokio::time::timeout(WAIT, stream.read_exact(&mut answer))
        .await
        .expect("the held request is answered once lifted")
        .expect("read");
    assert_eq!(proxy.bytes_to_client(), 2000);
}

#[tokio::test]
async fn resets_an_answer_in_its_middle_then_passes_the_next_whole() {
    const SIZE: usize = 200_000;
    let (upstream, _guard) = answerer(SIZE).await;
    let proxy = FaultProxy::start(upstream).await;
    proxy.set(|f| {
        f.reset_answers = 1;
        f.reset_after = 10_000;
    });
    let (got, ended) = ask(&mut connect(&proxy).await, SIZE).await;
    assert_eq!(ended, Some(ErrorKind::ConnectionReset), "after {got} bytes");
    assert!(got <= 10_000, "{got} bytes passed before the reset");
    assert_eq!(proxy.resets(), 1);
    assert_eq!(ask(&mut connect(&proxy).await, SIZE).await, (SIZE, None));
    assert_eq!(proxy.resets(), 1);
}

#[tokio::test]
async fn a_cut_ends_open_connections_and_later_ones_are_served() {
    let (upstream, _guard) = answerer(100).await;
    let proxy = FaultProxy::start(upstream).await;
    let mut open = connect(&proxy).await;
    assert_eq!(ask(&mut open, 100).await, (100, None));
    proxy.cut();
    let (got, ended) = ask(&mut open, 100).await;
    assert_eq!(got, 0);
    assert!(ended.is_some(), "the cut connection still answered");
    assert_eq!(ask(&mut connect(&proxy).await, 100).await, (100, None));
    assert_eq!(proxy.accepted(), 2);
}

#[tokio::test]
async fn the_silent_listener_accepts_and_never_answers() {
    let silent = silent_listener().await;
    let mut stream = TcpStream::connect(silent.addr()).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(QUIET, stream.read(&mut buf)).await;
    assert!(read.is_err(), "the silent listener answered: {read:?}");
    crate::support::wait_for(WAIT, Duration::from_millis(10), || async {
        (silent.accepted() == 1).then_some(())
    })
    .await
    .expect("the connection was accepted");
}
