//! Named connections: `Listener` and `client` (src/channel/listener.rs).
//!
//! Several clients in other processes (forked, and spawned: a fresh program
//! that knows only the address); authkeys right, wrong and missing on either
//! side; no listener; an address in use; a listener that closes or dies
//! before it accepts; accepted connections passed on to a child; and no
//! `/dev/shm` entry left behind. Every cross-process test runs under the
//! watchdog.

mod common;

use std::time::Duration;

use common::{WATCHDOG, Watchdog, fork_child, join_ok, shm_path, start_fn, unique_name};
use shmproc::{
    Connection, Error, Listener,
    StartMethod::{Fork, Spawn},
    client, client_timeout,
};

/// The tests here run one at a time, so that each can check that no
/// connection's pipe is left in `/dev/shm` (their names say only which
/// process made them).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Asserts that no connection's pipe segment is left in `/dev/shm`.
fn assert_no_pipes_left() {
    let left = pipes_left("shmproc-conn-");
    assert!(left.is_empty(), "connection pipes left in /dev/shm: {left:?}");
}

/// Names in `/dev/shm` that start with `prefix`.
fn pipes_left(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A listener's authkey and a client's.
type Keys = (Option<&'static [u8]>, Option<&'static [u8]>);

/// A watchdog that closes `l` when it fires.
fn watch(l: &std::sync::Arc<Listener>) -> Watchdog {
    let l = l.clone();
    Watchdog::new(move || l.close())
}

/// A client process: connects to `address`, sends its number, and expects it
/// back plus one.
fn one_client((address, key, n): (String, Option<Vec<u8>>, u32)) -> u32 {
    let conn = client(&address, key.as_deref()).unwrap_or_else(|e| panic!("client {n}: {e}"));
    conn.send(&n).unwrap();
    conn.recv::<u32>().unwrap()
}

#[test]
fn several_clients_in_other_processes_connect_and_talk() {
    let _serial = serial();
    for (method, key) in [(Fork, None), (Spawn, Some(b"k3y".to_vec())), (Fork, Some(Vec::new()))] {
        let address = unique_name("listen-many");
        let listener = std::sync::Arc::new(Listener::bind(&address, key.as_deref()).unwrap());
        assert_eq!(listener.address(), address);
        let dog = watch(&listener);
        let mut children: Vec<_> =
            (0..3).map(|n| start_fn(method, one_client, (address.clone(), key.clone(), n))).collect();
        for _ in 0..3 {
            let conn = listener.accept().unwrap_or_else(|e| panic!("{method:?}: {e}{}", dog.hung_note()));
            let n: u32 = conn.recv().unwrap();
            conn.send(&(n + 1)).unwrap();
        }
        let mut got: Vec<u32> = children.iter_mut().map(|c| join_ok(c)).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3], "{method:?}");
        drop(dog);
        drop(listener);
        assert_no_pipes_left();
        assert!(!shm_path(&address).exists(), "the listener's address is removed with it");
    }
}

#[test]
fn authkeys_must_match_on_both_sides() {
    let _serial = serial();
    let cases: [Keys; 3] = [(Some(b"right"), Some(b"wrong")), (Some(b"right"), None), (None, Some(b"right"))];
    for (listen_key, client_key) in cases {
        let address = unique_name("listen-auth");
        let listener = std::sync::Arc::new(Listener::bind(&address, listen_key).unwrap());
        let dog = watch(&listener);
        let key = client_key.map(<[u8]>::to_vec);
        let refused = {
            let address = address.clone();
            std::thread::spawn(move || client(&address, key.as_deref()).map(drop))
        };
        let accepted = listener.accept();
        let outcome = refused.join().unwrap();
        assert!(
            matches!(outcome, Err(Error::Authentication { .. })),
            "listener {listen_key:?}, client {client_key:?}: the client got {outcome:?}{}",
            dog.hung_note()
        );
        // A listener with a key refuses the client; one without cannot
        // tell, and its connection is closed by the client's refusal.
        if listen_key.is_some() {
            assert!(matches!(accepted, Err(Error::Authentication { .. })), "{accepted:?}");
        }
        // The right client is accepted next.
        let good = {
            let (address, key) = (address.clone(), listen_key.map(<[u8]>::to_vec));
            std::thread::spawn(move || client(&address, key.as_deref()).map(|c| c.recv::<String>()))
        };
        let conn = listener.accept().unwrap();
        conn.send(&"welcome").unwrap();
        assert_eq!(good.join().unwrap().unwrap().unwrap(), "welcome");
    }
    assert_no_pipes_left();
}

#[test]
fn no_listener_an_address_in_use_and_a_bad_address() {
    let _serial = serial();
    let address = unique_name("listen-none");
    assert!(matches!(client(&address, None), Err(Error::NotFound { .. })));
    let l = Listener::bind(&address, None).unwrap();
    // Only the owning user may connect.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(shm_path(&address)).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the listener's segment is private to its user");
    assert!(matches!(Listener::bind(&address, None), Err(Error::AlreadyExists { .. })));
    assert!(matches!(Listener::bind("../escape", None), Err(Error::InvalidName { .. })));
    drop(l);
    assert!(matches!(client(&address, None), Err(Error::NotFound { .. })), "the address goes with the listener");
    assert!(matches!(
        Listener::bind(&address, None).unwrap().accept_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
}

#[test]
fn a_listener_that_closes_before_it_accepts_refuses_the_waiting_client() {
    let _serial = serial();
    let address = unique_name("listen-close");
    let listener = std::sync::Arc::new(Listener::bind(&address, None).unwrap());
    let _dog = watch(&listener);
    let waiting = {
        let address = address.clone();
        std::thread::spawn(move || client(&address, None).map(drop))
    };
    // The request is in the queue, not accepted.
    std::thread::sleep(Duration::from_millis(50));
    listener.close();
    assert!(matches!(waiting.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(listener.accept(), Err(Error::Closed)));
    drop(listener);
    assert_no_pipes_left();
}

#[test]
fn a_listener_that_dies_before_it_accepts_refuses_the_waiting_client() {
    let _serial = serial();
    let address = unique_name("listen-dies");
    let ready = shmproc::Event::new().unwrap();
    let bound = ready.clone();
    let name = address.clone();
    let mut server = fork_child(move || {
        let _l = Listener::bind(&name, None).unwrap();
        bound.set();
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert!(ready.wait_timeout(WATCHDOG).unwrap());
    let waiting = {
        let address = address.clone();
        std::thread::spawn(move || client(&address, None).map(drop))
    };
    std::thread::sleep(Duration::from_millis(50));
    server.kill();
    assert!(matches!(waiting.join().unwrap(), Err(Error::Closed)));
    // The dead listener left its address and the client its pipe; remove
    // them as `cleanup` would.
    std::fs::remove_file(shm_path(&address)).unwrap();
    assert_no_pipes_left();
}

/// Echoes one message on a connection it was handed.
#[allow(clippy::needless_pass_by_value)] // process targets take their arguments by value
fn echo_once(conn: Connection) -> bool {
    let m: String = conn.recv().unwrap();
    conn.send(&m).is_ok()
}

#[test]
fn an_accepted_connection_passes_to_a_child_by_descriptor() {
    let _serial = serial();
    let address = unique_name("listen-pass");
    let listener = std::sync::Arc::new(Listener::bind(&address, None).unwrap());
    let dog = watch(&listener);
    let far = {
        let address = address.clone();
        std::thread::spawn(move || {
            let conn = client(&address, None).unwrap();
            conn.send(&"hello".to_owned()).unwrap();
            conn.recv::<String>()
        })
    };
    let conn = listener.accept().unwrap();
    // Its segment's name is gone: the child maps it through a descriptor.
    assert!(!shm_path(conn.name().unwrap()).exists());
    let mut child = start_fn(Spawn, echo_once, conn);
    assert!(join_ok(&mut child));
    assert_eq!(far.join().unwrap().unwrap_or_else(|e| panic!("{e}{}", dog.hung_note())), "hello");
    assert_no_pipes_left();
}

/// A listener bound in one process and accepting in a forked child (a
/// pre-fork server): the child adopts the record the client made for the
/// binder, so the client sees end of file when the child drops its end,
/// while both processes live.
#[test]
fn a_forked_acceptor_takes_over_the_binders_hold() {
    let _serial = serial();
    let address = unique_name("listen-prefork");
    // The parent keeps the listener (its drop would close it and remove the
    // address); the child gets a copy of the handle by the fork.
    let listener = std::sync::Arc::new(Listener::bind(&address, None).unwrap());
    let theirs = listener.clone();
    let done = shmproc::Event::new().unwrap();
    let dropped = done.clone();
    let mut acceptor = fork_child(move || {
        let listener = theirs;
        let conn = listener.accept().unwrap();
        let n: u32 = conn.recv().unwrap();
        conn.send(&(n + 1)).unwrap();
        drop(conn);
        dropped.set();
        // Alive, holding nothing of the connection.
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let conn = client(&address, None).unwrap();
    conn.send(&1u32).unwrap();
    assert_eq!(conn.recv::<u32>().unwrap(), 2);
    assert!(done.wait_timeout(WATCHDOG).unwrap());
    let got = conn.recv_timeout::<u32>(WATCHDOG);
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
    acceptor.kill();
    assert_no_pipes_left();
}

/// Names of pipes that the client `pid` made and left in `/dev/shm`.
fn pipes_left_by(pid: libc::pid_t) -> Vec<String> {
    pipes_left(&format!("shmproc-conn-{pid}-"))
}

/// `client_timeout` gives up on a listener that does not accept, after
/// its timeout, and takes its pipe's name with it: the request it left is
/// skipped by the next accept, and nothing stays in `/dev/shm`. (The
/// clients are forked children, so that their pipe names are theirs.)
#[test]
fn a_client_that_times_out_leaves_nothing_and_its_request_is_skipped() {
    let _s = serial();
    let _w = Watchdog::new(|| common::abort_hung("listener", "client_timeout"));
    let address = unique_name("listener-timeout");
    let listener = Listener::bind(&address, None).unwrap();
    let a = address.clone();
    let mut c = fork_child(move || {
        let started = std::time::Instant::now();
        match client_timeout(&a, None, Duration::from_millis(100)) {
            Err(Error::Timeout) if started.elapsed() >= Duration::from_millis(100) => 0,
            other => panic!("a listener that never accepts: {other:?} after {:?}", started.elapsed()),
        }
    });
    assert_eq!(c.wait_timeout(WATCHDOG), Some(0), "{}", c.describe());
    assert_eq!(pipes_left_by(c.pid()), Vec::<String>::new(), "the client's pipe name stayed");
    // Its request is still queued: the accept finds no pipe there, skips
    // it, and times out.
    assert!(matches!(listener.accept_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
    // A client within its timeout is accepted as with `client`.
    let a = address.clone();
    let mut c = fork_child(move || {
        let conn = client_timeout(&a, None, Duration::from_secs(10)).unwrap();
        conn.send(&5u32).unwrap();
        0
    });
    let conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(conn.recv::<u32>().unwrap(), 5);
    assert_eq!(c.wait_timeout(WATCHDOG), Some(0), "{}", c.describe());
    drop(listener);
    common::assert_no_leftovers("listener-timeout");
}

/// A client refused by a listener that is closed (but not yet gone) leaves
/// no pipe name behind.
#[test]
fn a_client_refused_by_a_closed_listener_leaves_no_name() {
    let _s = serial();
    let _w = Watchdog::new(|| common::abort_hung("listener", "closed listener"));
    let address = unique_name("listener-closed");
    let listener = Listener::bind(&address, None).unwrap();
    listener.close();
    let a = address.clone();
    let mut c = fork_child(move || match client(&a, None) {
        Err(Error::Closed) => 0,
        other => panic!("a closed listener: {other:?}"),
    });
    assert_eq!(c.wait_timeout(WATCHDOG), Some(0), "{}", c.describe());
    assert_eq!(pipes_left_by(c.pid()), Vec::<String>::new(), "the refused client's pipe name stayed");
    drop(listener);
    common::assert_no_leftovers("listener-closed");
}
