//! Managers: every proxy method, from several processes at once; the
//! atomic update under contention; native objects; the server killed; a
//! client killed while it holds a key; malformed requests.

mod common;

use std::time::{Duration, Instant};

use common::{Watchdog, start_fn};
use shmproc::{Error, Manager, Namespace, Pool, SharedDict, SharedList, StartMethod};

fn watchdog(what: &'static str) -> Watchdog {
    Watchdog::new(move || {
        eprintln!("watchdog: the manager test `{what}` hung; aborting");
        std::process::abort();
    })
}

#[test]
fn dict_list_and_namespace_do_what_python_does() {
    let _w = watchdog("methods");
    let m = Manager::start().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    assert_eq!(d.insert("a".into(), vec![1, 2]).unwrap(), None);
    assert_eq!(d.insert("a".into(), vec![3]).unwrap(), Some(vec![1, 2]));
    assert_eq!(d.get(&"a".into()).unwrap(), Some(vec![3]));
    assert!(d.contains_key(&"a".into()).unwrap() && !d.contains_key(&"b".into()).unwrap());
    d.extend([("b".into(), vec![]), ("c".into(), vec![7; 100_000])]).unwrap();
    assert_eq!(d.len().unwrap(), 3);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(d.values().unwrap().iter().map(Vec::len).sum::<usize>(), 100_001);
    assert_eq!(d.items().unwrap().len(), 3);
    assert_eq!(d.remove(&"b".into()).unwrap(), Some(vec![]));
    assert_eq!(d.update("a".into(), |v| [v.unwrap(), vec![4]].concat()).unwrap(), vec![3, 4]);
    assert_eq!(d.update("new".into(), Option::unwrap_or_default).unwrap(), Vec::<u32>::new());
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());

    let l = m.list::<(u8, String)>().unwrap();
    l.push((1, "one".into())).unwrap();
    l.extend([(2, "two".into()), (3, "three".into())]).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(1).unwrap(), (2, "two".into()));
    l.set(1, (22, "twenty-two".into())).unwrap();
    assert_eq!(l.pop().unwrap(), Some((3, "three".into())));
    assert_eq!(l.to_vec().unwrap(), [(1, "one".into()), (22, "twenty-two".into())]);
    assert!(matches!(l.get(9), Err(Error::Manager { .. })), "out of range is an error reply");
    assert!(matches!(l.set(9, (0, String::new())), Err(Error::Manager { .. })));

    let ns = m.namespace().unwrap();
    ns.set("x", &5u8).unwrap();
    ns.set("name", &"shmproc").unwrap();
    assert_eq!(ns.get::<u8>("x").unwrap(), Some(5));
    assert_eq!(ns.get::<String>("name").unwrap().as_deref(), Some("shmproc"));
    assert_eq!(ns.names().unwrap(), ["name", "x"]);
    assert!(ns.remove("x").unwrap() && !ns.remove("x").unwrap());
    assert_eq!(ns.get::<u8>("x").unwrap(), None);
    m.shutdown().unwrap();
    assert!(matches!(d.len(), Err(Error::Closed)), "a call after shutdown is Closed");
}

fn fill((d, l, ns, who): (SharedDict<u32, u32>, SharedList<u32>, Namespace, u32)) -> u32 {
    for i in 0..50 {
        d.insert(who * 1000 + i, i).unwrap();
        d.update(0, |n| n.unwrap_or(0) + 1).unwrap();
    }
    l.push(std::process::id()).unwrap();
    ns.set(&format!("worker{who}"), &who).unwrap();
    who
}

#[test]
fn proxies_work_from_several_processes_at_once_and_updates_are_atomic() {
    let _w = watchdog("processes");
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let m = Manager::builder().start_method(method).start().unwrap();
        let (d, l, ns) = (m.dict::<u32, u32>().unwrap(), m.list::<u32>().unwrap(), m.namespace().unwrap());
        let mut children: Vec<_> =
            (1..=4).map(|who| start_fn(method, fill, (d.clone(), l.clone(), ns.clone(), who))).collect();
        for (i, c) in children.iter_mut().enumerate() {
            assert_eq!(common::join_ok(c), i as u32 + 1);
        }
        assert_eq!(d.get(&0).unwrap(), Some(200), "{method:?}: 4 × 50 atomic increments");
        assert_eq!(d.len().unwrap(), 201);
        assert_eq!(l.len().unwrap(), 4);
        assert_eq!(ns.names().unwrap().len(), 4);
        m.shutdown().unwrap();
    }
}

fn locked_add((lock, total, n): (shmproc::Lock, SharedDict<u8, u64>, u64)) -> u64 {
    let _g = lock.lock().unwrap();
    let now = total.get(&0).unwrap().unwrap_or(0);
    total.insert(0, now + n).unwrap();
    n
}

#[test]
fn a_manager_lock_and_proxies_reach_pool_tasks() {
    let _w = watchdog("pool");
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let total = m.dict::<u8, u64>().unwrap();
    let p = Pool::builder().processes(2).start_method(StartMethod::Spawn).build().unwrap();
    let args: Vec<_> = (1..=20).map(|n| (lock.clone(), total.clone(), n)).collect();
    assert_eq!(p.map(locked_add, args, Some(1)).unwrap().iter().sum::<u64>(), 210);
    assert_eq!(total.get(&0).unwrap(), Some(210), "read-then-write under the manager's lock");
    let q = m.queue::<String>(1 << 16).unwrap();
    q.put("through the manager's queue".to_owned()).unwrap();
    assert_eq!(q.get().unwrap(), "through the manager's queue");
    let e = m.event().unwrap();
    e.set();
    assert!(e.is_set().unwrap());
    p.close();
    p.join().unwrap();
    m.shutdown().unwrap();
}

#[test]
fn a_killed_server_makes_every_call_closed() {
    let _w = watchdog("server_killed");
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let lock = m.lock().unwrap();
    let pid = m.pid().unwrap();
    // SAFETY: kill(2) on our own child, the server.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let started = Instant::now();
    let err = loop {
        match d.get(&1) {
            Err(e) => break e,
            Ok(_) if started.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => panic!("calls still answered after the server was killed"),
        }
    };
    assert!(matches!(err, Error::Closed), "{err}");
    assert!(matches!(m.dict::<u8, u8>(), Err(Error::Closed)));
    assert!(m.shutdown().is_err(), "the server died");
    // A native object still works without its server; once no one maps it,
    // its name goes with the rest.
    assert!(lock.try_lock().is_ok());
    drop(lock);
    // Its named segments (listener, natives) are swept as a dead creator's.
    // `cleanup` leaves a segment some process still maps: a child another
    // test forked while this one had the listener's queue mapped (in a
    // connection attempt) maps it until it exits. So sweep until it is gone.
    let left = || {
        std::fs::read_dir("/dev/shm").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(m.address()))
    };
    let started = Instant::now();
    while {
        shmproc::cleanup().unwrap();
        left()
    } && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!left(), "the killed server's names are still there after 20 s of sweeping");
}

fn hold_forever((d, ns): (SharedDict<u8, u64>, Namespace)) -> u64 {
    d.update(0, |_| {
        // Say so, then never finish the update.
        ns.set("holding", &true).unwrap();
        std::thread::sleep(Duration::from_secs(600));
        0
    })
    .unwrap()
}

#[test]
fn a_client_killed_while_it_holds_a_key_lets_it_go() {
    let _w = watchdog("client_killed");
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u64>().unwrap();
    d.insert(0, 41).unwrap();
    let ns = m.namespace().unwrap();
    let mut child = start_fn(StartMethod::Fork, hold_forever, (d.clone(), ns.clone()));
    common::wait_until("the child holds the key", || ns.get::<bool>("holding").unwrap() == Some(true));
    // Another client's update of that key waits meanwhile; other keys go.
    d.insert(1, 1).unwrap();
    let waiting = {
        let d = d.clone();
        std::thread::spawn(move || d.update(0, |n| n.unwrap() + 100).unwrap())
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiting.is_finished(), "an update of a held key went through");
    child.kill().unwrap();
    assert!(child.join().is_err());
    let started = Instant::now();
    assert_eq!(waiting.join().unwrap(), 141, "the dead client's hold was released");
    assert_eq!(d.update(0, |n| n.unwrap() + 1).unwrap(), 142);
    assert!(started.elapsed() < Duration::from_secs(10));
    m.shutdown().unwrap();
}

#[test]
fn malformed_requests_get_an_error_reply_and_the_server_goes_on() {
    let _w = watchdog("malformed");
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let raw = shmproc::client(m.address(), Some(m.authkey())).unwrap();
    let mut rng = common::XorShift::new(0x6d67_7200);
    for round in 0..200 {
        let len = (rng.next_u64() % 64) as usize;
        let garbage = rng.bytes(len);
        raw.send_bytes(&garbage).unwrap();
        let reply =
            raw.recv_bytes_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("round {round}: no reply: {e}"));
        assert!(!reply.is_empty());
        d.insert(1, round as u8).unwrap();
    }
    assert_eq!(d.get(&1).unwrap(), Some(199));
    drop(raw);
    m.shutdown().unwrap();
}

#[allow(clippy::needless_pass_by_value, reason = "a process target takes its argument by value")]
fn insert_forever(d: SharedDict<u32, Vec<u8>>) -> u32 {
    // Large values stream in chunks: a kill lands in the middle of one.
    let big = vec![7u8; 8 << 20];
    for i in 0.. {
        d.insert(i % 4, big.clone()).unwrap();
    }
    0
}

#[test]
fn a_client_killed_mid_request_leaves_the_server_serving_the_others() {
    let _w = watchdog("client_killed_mid_request");
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, Vec<u8>>().unwrap();
    let mut rng = common::XorShift::new(0x6d67_7201);
    for _ in 0..5 {
        let mut child = start_fn(StartMethod::Fork, insert_forever, d.clone());
        std::thread::sleep(Duration::from_millis(20 + rng.next_u64() % 60));
        child.kill().unwrap();
        assert!(child.join().is_err());
        // The server goes on, with whole values only.
        d.insert(100, vec![1, 2, 3]).unwrap();
        for v in d.values().unwrap() {
            assert!(v == [1, 2, 3] || (v.len() == 8 << 20 && v.iter().all(|&b| b == 7)), "a torn value");
        }
    }
    m.shutdown().unwrap();
}

#[test]
fn updates_from_threads_of_one_process_are_atomic_too() {
    let _w = watchdog("threads");
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u64>().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let d = d.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    d.update(0, |n| {
                        // Another thread's update must not slip in here.
                        std::thread::yield_now();
                        n.unwrap_or(0) + 1
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(d.get(&0).unwrap(), Some(200));
    // A panicking update lets the key go untouched.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.update(0, |_| panic!("no"))));
    assert!(r.is_err());
    assert_eq!(d.update(0, |n| n.unwrap() + 1).unwrap(), 201);
    m.shutdown().unwrap();
}

#[test]
fn a_request_too_large_is_refused_and_the_next_one_works() {
    let _w = watchdog("too_large");
    let m = Manager::start().unwrap();
    let l = m.list::<shmproc::Bytes>().unwrap();
    let huge = shmproc::Bytes(vec![0; 300 << 20]);
    assert!(matches!(l.push(huge), Err(Error::TooLarge { .. })));
    l.push(shmproc::Bytes(vec![1; 10])).unwrap();
    assert_eq!(l.len().unwrap(), 1);
    assert!(matches!(m.queue::<u8>(1 << 30), Err(Error::Manager { .. })), "a 1 GiB queue is refused");
    let lock = m.lock().unwrap();
    drop(lock);
    let address = m.address().to_owned();
    m.shutdown().unwrap();
    // Its names (listener, native objects) are gone with it.
    assert!(
        !std::fs::read_dir("/dev/shm").unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(&address))
    );
}
