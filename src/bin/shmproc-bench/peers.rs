//! The `peers` group: the pipe group's 64-byte [`Connection`] round trip
//! against the same echo over other IPC libraries, iceoryx2 (publish-subscribe,
//! busy-polled or woken by its event service) and ipc-channel, interleaved
//! with it in the same run and placement.
//!
//! The libraries are optional dependencies (`--features peers`): without
//! them the rows are listed as skipped, and the default build stays small.
//!
//! A peer's channels are made anew for every run by the bench process, before
//! the fork, and dropped by it after the run: the forked driver and echo only
//! use them, and leave with `_exit`, so whatever a library creates (iceoryx2's
//! segments in `/dev/shm` and files under its root folder) is removed by the
//! process that created it, even when the watchdog kills a child. Each
//! iceoryx2 run has a domain of its own, removed whole after the run.
//!
//! [`Connection`]: shmproc::Connection

use shmproc::WaitStrategy;

use crate::kit::Placement;
use crate::pipe::ROUND_TRIP;
use crate::report::{RowSpec, Unit};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "peers", plan, legend: LEGEND };

const LEGEND: &str = "\
peers rows (only with --features peers; without it they are listed as skipped): the pipe
  group's Connection 64 B round trip (a fresh shmproc::pipe() per run, sequence numbers
  checked) interleaved with the same echo of 64-byte messages over a peer library, whose
  channels the bench process makes anew for every run before forking the driver and echo,
  and drops after it. Each iceoryx2 run has a domain of its own (name prefix and root folder
  hold the bench's pid and the run number; removed after the run), the default config (no
  config file is read) and no signal handlers.
  vs iceoryx2 pub/sub     iceoryx2 0.10 publish-subscribe of [u8; 64] (ipc::Service), one
    (spinning)            service each way, one node per side: loan_uninit, write_payload,
                          send; the receiver busy-polls receive() (a spin-loop hint between
                          polls) and copies the payload out. Subject (Adaptive). SPEC: ≥ 2×
                          faster cross_core; same_core and unpinned for reference (on one CPU
                          each hop waits for a scheduler tick, ~4 ms: such runs time only a
                          few round trips, and probe where the echo runs for at most 50 ms;
                          SPEC's same_core bound for the subject, ≤ 1.2× raw futex, is the
                          pipe group's row).
  vs iceoryx2 event       the same publish-subscribe, plus an event service each way: the
                          sender notify()s after each send; the receiver tries receive() and,
                          while it finds nothing, sleeps in its listener's blocking_wait (a Unix
                          datagram socket). Subject (Block). SPEC: ≤ 1× in every placement.
  vs ipc-channel          ipc-channel 0.23: a bytes_channel (IpcBytesSender / IpcBytesReceiver,
                          its raw path: no serialization) each way, made before the fork (socket
                          pairs); send of the 64 bytes, blocking recv (a Vec per message, its
                          only receive). Subject (Block). SPEC: ≤ 1× in every placement.
";

/// Why the rows are skipped without the libraries.
#[cfg(not(feature = "peers"))]
const NOT_BUILT: &str = "build with --features peers";

/// A peer library's round trip: the baseline of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// iceoryx2 publish-subscribe, each receiver busy-polling.
    IceoryxSpin,
    /// iceoryx2 publish-subscribe, each receiver sleeping on an event listener.
    IceoryxEvent,
    /// ipc-channel, blocking `recv`.
    IpcChannel,
}

impl Peer {
    /// Every peer, in table order.
    const ALL: [Peer; 3] = [Peer::IceoryxSpin, Peer::IceoryxEvent, Peer::IpcChannel];

    /// The row's name after the subject's, and the baseline column.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Peer::IceoryxSpin => ("iceoryx2 pub/sub (spinning)", "iceoryx2 pub/sub, busy poll"),
            Peer::IceoryxEvent => ("iceoryx2 event", "iceoryx2 pub/sub + event"),
            Peer::IpcChannel => ("ipc-channel", "ipc-channel IpcBytesSender (raw bytes)"),
        }
    }

    /// How the subject waits: spinning against spinning, sleeping against
    /// sleeping.
    fn strategy(self) -> WaitStrategy {
        match self {
            Peer::IceoryxSpin => WaitStrategy::Adaptive,
            Peer::IceoryxEvent | Peer::IpcChannel => WaitStrategy::Block,
        }
    }

    /// SPEC §6: ≥ 2× faster than iceoryx2's busy poll across CPUs (elsewhere
    /// for reference), at least as fast as the blocking peers everywhere.
    fn target(self, placement: Placement) -> Option<f64> {
        match self {
            Peer::IceoryxSpin => (placement == Placement::CrossCore).then_some(0.5),
            Peer::IceoryxEvent | Peer::IpcChannel => Some(1.0),
        }
    }
}

fn plan() -> Vec<Plan> {
    Peer::ALL.into_iter().flat_map(|peer| Placement::ALL.map(|placement| row(peer, placement))).collect()
}

fn row(peer: Peer, placement: Placement) -> Plan {
    let (versus, baseline) = peer.names();
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{ROUND_TRIP} ({:?}) vs {versus}", peer.strategy()),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: baseline.to_owned(),
        target: peer.target(placement),
    };
    #[cfg(feature = "peers")]
    {
        Plan::new(spec, move |kit| {
            let strategy = peer.strategy();
            let subject = crate::pipe::contender(strategy);
            kit.ping_pong(&subject, &links::contender(peer), placement, crate::pipe::spins(strategy, placement))
        })
    }
    #[cfg(not(feature = "peers"))]
    {
        Plan::skipped(spec, NOT_BUILT)
    }
}

/// The peers' links (one side's channels) and how a run makes them.
#[cfg(feature = "peers")]
mod links {
    use std::fmt::Display;
    use std::os::unix::ffi::OsStrExt as _;
    use std::path::{Path, PathBuf};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use iceoryx2::port::listener::Listener;
    use iceoryx2::port::notifier::Notifier;
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::port::update_connections::UpdateConnections as _;
    use iceoryx2::prelude::{
        Config, FileName, Node, NodeBuilder, NodeName, Path as IoxPath, SemanticString as _, ServiceName,
        SignalHandlingMode, ipc,
    };
    use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender};

    use super::Peer;
    use crate::kit::Contender;
    use crate::pipe::{Bounce, Link, MESSAGE_BYTES};

    /// The bench's contender for `peer`: a fresh pair of links every run.
    pub(super) fn contender(peer: Peer) -> Contender {
        let (_, name) = peer.names();
        match peer {
            Peer::IceoryxSpin => Contender::new(name, || iceoryx_pair(false)),
            Peer::IceoryxEvent => Contender::new(name, || iceoryx_pair(true)),
            Peer::IpcChannel => Contender::new(name, ipc_channel_pair),
        }
    }

    /// A peer library's error as shmproc's, saying what failed.
    fn peer_error<E: Display>(op: &'static str) -> impl FnOnce(E) -> shmproc::Error {
        move |e| shmproc::Error::Io { op, source: std::io::Error::other(e.to_string()) }
    }

    // -----------------------------------------------------------------------
    // iceoryx2
    // -----------------------------------------------------------------------

    /// What a round trip carries.
    type Payload = [u8; MESSAGE_BYTES];

    /// iceoryx2 runs of this process so far: with the pid, it names a run's
    /// [`Domain`].
    static IOX_RUNS: AtomicU64 = AtomicU64::new(0);

    /// Where POSIX shared memory objects live (iceoryx2's segments among
    /// them).
    const SHM_DIR: &str = "/dev/shm";

    /// One run's iceoryx2 domain: a config whose prefix (of every name
    /// iceoryx2 creates, in `/dev/shm` too) and root (of its files) hold the
    /// bench's pid and the run's number, so no two runs share a node or a
    /// service, and nothing a killed bench left behind is opened by mistake.
    /// Held by the run's links, after their ports: once the last link is
    /// dropped (its ports and nodes removed by iceoryx2), it removes what
    /// iceoryx2 keeps past a domain's last node, the global management
    /// segment (a node counter), and the root's empty directories.
    #[derive(Debug)]
    struct Domain {
        config: Config,
        /// `config`'s prefix.
        prefix: String,
        /// `config`'s root path: under `/tmp` as iceoryx2's default, not
        /// `TMPDIR`, and short (a listener's socket path, root and name,
        /// must fit in 108 bytes).
        root: PathBuf,
    }

    impl Domain {
        fn new() -> shmproc::Result<Rc<Self>> {
            // Once per process: what a bench killed mid-row left.
            static SWEPT: std::sync::Once = std::sync::Once::new();
            SWEPT.call_once(sweep_stale);
            let (pid, run) = (std::process::id(), IOX_RUNS.fetch_add(1, Ordering::Relaxed));
            let prefix = format!("{SHM_STEM}{pid}r{run}_");
            let root = PathBuf::from(format!("/tmp/{ROOT_STEM}{pid}-{run}"));
            let mut config = Config::default();
            config.global.prefix = FileName::new(prefix.as_bytes()).map_err(peer_error("iceoryx2 prefix"))?;
            let root_path = IoxPath::new(root.as_os_str().as_bytes()).map_err(peer_error("iceoryx2 root"))?;
            config.global.set_root_path(&root_path);
            Ok(Rc::new(Domain { config, prefix, root }))
        }

        /// The domain's names in `/dev/shm`.
        fn segments(&self) -> Vec<String> {
            let entries = std::fs::read_dir(SHM_DIR).into_iter().flatten().filter_map(Result::ok);
            entries.filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(&self.prefix)).collect()
        }
    }

    /// The prefix of a domain's names in `/dev/shm`, and of its root under
    /// `/tmp`, before the pid of the bench that made it.
    const SHM_STEM: &str = "iox2sb";
    const ROOT_STEM: &str = "shmproc-bench-iox2-";

    /// Removes the domains of benches that are gone: a bench killed during
    /// a peers row (SIGKILL, a watchdog, Ctrl-C: iceoryx2's signal handling
    /// is off) never ran its domains' drops. A name or folder is removed
    /// only when no process has the pid it holds.
    fn sweep_stale() {
        sweep_in(Path::new(SHM_DIR), Path::new("/tmp"));
    }

    fn sweep_in(shm: &Path, tmp: &Path) {
        let dead = |pid: &str| {
            let pid = pid.parse::<i32>().ok().and_then(rustix::process::Pid::from_raw);
            pid.is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH))
        };
        let names = |dir: &Path| -> Vec<String> {
            let entries = std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok);
            entries.filter_map(|e| e.file_name().into_string().ok()).collect()
        };
        for name in names(shm) {
            if let Some((pid, _)) = name.strip_prefix(SHM_STEM).and_then(|rest| rest.split_once('r'))
                && dead(pid)
            {
                let _ = std::fs::remove_file(shm.join(&name));
            }
        }
        for name in names(tmp) {
            if let Some((pid, _)) = name.strip_prefix(ROOT_STEM).and_then(|rest| rest.split_once('-'))
                && dead(pid)
            {
                let _ = std::fs::remove_dir_all(tmp.join(&name));
            }
        }
    }

    impl Drop for Domain {
        fn drop(&mut self) {
            for name in self.segments() {
                let _ = rustix::shm::unlink(name.as_str());
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// One side's iceoryx2 ports: it publishes on one service and subscribes
    /// to the other's; with events, it notifies the peer's listener after
    /// each send and sleeps on its own when it finds nothing to receive.
    /// The ports hold their services and node: dropping the link (in the
    /// bench process, after the run) removes them.
    #[derive(Debug)]
    struct IceoryxLink {
        out: Outlet,
        inlet: Inlet,
        /// Held, never read; declared last, so dropped after the ports.
        _domain: Rc<Domain>,
    }

    /// The sending half of a link: a publisher, and with events the notifier
    /// to the peer's listener.
    type Outlet = (Publisher<ipc::Service, Payload, ()>, Option<Notifier<ipc::Service>>);
    /// The receiving half of a link: a subscriber, and with events its
    /// listener; `None`: the receiver busy-polls.
    type Inlet = (Subscriber<ipc::Service, Payload, ()>, Option<Listener<ipc::Service>>);

    impl Link for IceoryxLink {
        fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
            let (publisher, notifier) = &self.out;
            let payload: Payload = msg.try_into().map_err(peer_error("iceoryx2 message size"))?;
            let sample = publisher.loan_uninit().map_err(peer_error("iceoryx2 loan"))?;
            sample.write_payload(payload).send().map_err(peer_error("iceoryx2 send"))?;
            if let Some(notifier) = notifier {
                notifier.notify().map_err(peer_error("iceoryx2 notify"))?;
            }
            Ok(())
        }

        /// Polls until a sample is there, sleeping between polls on the
        /// listener if there is one. Notifications are counted, and each
        /// sample is sent before its notification: one that came while the
        /// receiver was not waiting makes the next wait return at once, so
        /// none is lost; a sample taken before its notification leaves that
        /// notification pending, which costs the next receive one extra poll.
        fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
            let (subscriber, listener) = &self.inlet;
            loop {
                if let Some(sample) = subscriber.receive().map_err(peer_error("iceoryx2 receive"))? {
                    let payload: &Payload = &sample;
                    buf.copy_from_slice(payload);
                    return Ok(payload.len());
                }
                match listener {
                    Some(listener) => {
                        listener.blocking_wait(|_| {}).map_err(peer_error("iceoryx2 wait"))?;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }
    }

    /// A node in `domain` (whose config is the default one, no config file
    /// is read), without signal handlers (Ctrl-C still stops the bench).
    fn node(domain: &Domain, role: &str) -> shmproc::Result<Node<ipc::Service>> {
        let name = NodeName::new(&format!("shmproc-bench-{role}")).map_err(peer_error("iceoryx2 node name"))?;
        NodeBuilder::new()
            .name(&name)
            .config(&domain.config)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .map_err(peer_error("iceoryx2 node"))
    }

    /// One direction of a pair, named `name`: `from`'s node creates a
    /// publish-subscribe service (and with `events` an event service,
    /// `name-wake`), `to`'s node opens it; `from` gets the outlet, `to` the
    /// inlet. Every connection is made here, before the fork: a port that
    /// connected in a child would create files only that child could remove.
    fn direction(
        from: &Node<ipc::Service>,
        to: &Node<ipc::Service>,
        name: &str,
        events: bool,
    ) -> shmproc::Result<(Outlet, Inlet)> {
        let topic = ServiceName::new(name).map_err(peer_error("iceoryx2 service name"))?;
        let service = |node: &Node<ipc::Service>| {
            node.service_builder(&topic).publish_subscribe::<Payload>().max_publishers(1).max_subscribers(1)
        };
        let created = service(from).history_size(0).create().map_err(peer_error("iceoryx2 create service"))?;
        let opened = service(to).open().map_err(peer_error("iceoryx2 open service"))?;
        let subscriber = opened.subscriber_builder().create().map_err(peer_error("iceoryx2 subscriber"))?;
        let publisher = created.publisher_builder().create().map_err(peer_error("iceoryx2 publisher"))?;
        publisher.update_connections().map_err(peer_error("iceoryx2 publisher connections"))?;
        subscriber.update_connections().map_err(peer_error("iceoryx2 subscriber connections"))?;
        if !events {
            return Ok(((publisher, None), (subscriber, None)));
        }
        let wake = ServiceName::new(&format!("{name}-wake")).map_err(peer_error("iceoryx2 service name"))?;
        // No events but ours: a notifier's creation or drop would otherwise
        // wake the listener too.
        let event = |node: &Node<ipc::Service>| {
            node.service_builder(&wake)
                .event()
                .max_notifiers(1)
                .max_listeners(1)
                .disable_notifier_created_event()
                .disable_notifier_dropped_event()
                .disable_notifier_dead_event()
        };
        let created = event(from).create().map_err(peer_error("iceoryx2 create event"))?;
        let opened = event(to).open().map_err(peer_error("iceoryx2 open event"))?;
        // The listener first: a notifier connects to the listeners there are.
        let listener = opened.listener_builder().create().map_err(peer_error("iceoryx2 listener"))?;
        let notifier = created.notifier_builder().create().map_err(peer_error("iceoryx2 notifier"))?;
        notifier.update_connections().map_err(peer_error("iceoryx2 notifier connections"))?;
        Ok(((publisher, Some(notifier)), (subscriber, Some(listener))))
    }

    /// A fresh (driver, echo) pair over iceoryx2, in a domain of its own: a
    /// node per side, and a `ping` (driver → echo) and a `pong` direction.
    fn iceoryx_pair(events: bool) -> shmproc::Result<(Bounce<IceoryxLink>, Bounce<IceoryxLink>)> {
        iceoryx_pair_in(&Domain::new()?, events)
    }

    /// [`iceoryx_pair`] in `domain`.
    fn iceoryx_pair_in(
        domain: &Rc<Domain>,
        events: bool,
    ) -> shmproc::Result<(Bounce<IceoryxLink>, Bounce<IceoryxLink>)> {
        let (driver, echo) = (node(domain, "driver")?, node(domain, "echo")?);
        let (driver_out, echo_in) = direction(&driver, &echo, "shmproc-bench/ping", events)?;
        let (echo_out, driver_in) = direction(&echo, &driver, "shmproc-bench/pong", events)?;
        let link = |out, inlet| IceoryxLink { out, inlet, _domain: Rc::clone(domain) };
        Ok(Bounce::pair(link(driver_out, driver_in), link(echo_out, echo_in)))
    }

    // -----------------------------------------------------------------------
    // ipc-channel
    // -----------------------------------------------------------------------

    /// One side's ipc-channel ends: it sends on one channel and receives on
    /// the other.
    #[derive(Debug)]
    struct IpcChannelLink {
        tx: IpcBytesSender,
        rx: IpcBytesReceiver,
    }

    impl Link for IpcChannelLink {
        fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
            self.tx.send(msg).map_err(peer_error("ipc-channel send"))
        }

        /// The message's length; a longer one than `buf` is cut (its length
        /// still fails the round trip's check).
        fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
            let msg = self.rx.recv().map_err(peer_error("ipc-channel recv"))?;
            let n = msg.len().min(buf.len());
            buf[..n].copy_from_slice(&msg[..n]);
            Ok(msg.len())
        }
    }

    /// A fresh (driver, echo) pair over two ipc-channel channels, made before
    /// the fork (the children inherit their sockets).
    fn ipc_channel_pair() -> shmproc::Result<(Bounce<IpcChannelLink>, Bounce<IpcChannelLink>)> {
        let (ping_tx, ping_rx) = ipc_channel::ipc::bytes_channel().map_err(peer_error("ipc-channel channel"))?;
        let (pong_tx, pong_rx) = ipc_channel::ipc::bytes_channel().map_err(peer_error("ipc-channel channel"))?;
        Ok(Bounce::pair(IpcChannelLink { tx: ping_tx, rx: pong_rx }, IpcChannelLink { tx: pong_tx, rx: ping_rx }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::kit::Side;

        #[test]
        fn a_dead_benchs_domains_are_swept_and_a_live_ones_kept() {
            let (shm, tmp) = (
                std::env::temp_dir().join(format!("sweep-shm-{}", std::process::id())),
                std::env::temp_dir().join(format!("sweep-tmp-{}", std::process::id())),
            );
            std::fs::create_dir_all(&shm).unwrap();
            std::fs::create_dir_all(&tmp).unwrap();
            // No process has pid 2000000000 (above any pid_max).
            let me = std::process::id();
            for pid in [2_000_000_000, me] {
                std::fs::write(shm.join(format!("{SHM_STEM}{pid}r0_x.global_mgmt")), b"").unwrap();
                std::fs::create_dir_all(tmp.join(format!("{ROOT_STEM}{pid}-0")).join("nodes")).unwrap();
            }
            std::fs::write(shm.join("iox2sbnot-a-pid"), b"").unwrap();
            sweep_in(&shm, &tmp);
            let left = |dir: &Path| {
                let mut v: Vec<String> =
                    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
                v.sort();
                v
            };
            assert_eq!(left(&shm), [format!("{SHM_STEM}{me}r0_x.global_mgmt"), "iox2sbnot-a-pid".to_owned()]);
            assert_eq!(left(&tmp), [format!("{ROOT_STEM}{me}-0")]);
            std::fs::remove_dir_all(&shm).unwrap();
            std::fs::remove_dir_all(&tmp).unwrap();
        }

        /// Three round trips in this process, and a repeated answer caught.
        fn bounce<L: Link>(mut driver: Bounce<L>, mut echo: Bounce<L>) {
            for _ in 0..3 {
                driver.send().unwrap();
                echo.recv().unwrap();
                echo.send().unwrap();
                driver.recv().unwrap();
            }
            echo.send().unwrap();
            assert!(driver.recv().unwrap_err().to_string().contains("sequence 3"));
        }

        #[test]
        fn each_peer_carries_checked_messages_and_iceoryx2_leaves_nothing() {
            for events in [false, true] {
                let domain = Domain::new().unwrap();
                let (driver, echo) = iceoryx_pair_in(&domain, events).unwrap();
                assert!(domain.root.is_dir() && domain.segments().len() > 1, "{:?}", domain.segments());
                bounce(driver, echo);
                // iceoryx2 removed its nodes and services; only the global
                // management segment is left for the domain to remove.
                let left = domain.segments();
                assert!(left.len() == 1 && left[0].ends_with(".global_mgmt"), "{left:?}");
                let (root, prefix) = (domain.root.clone(), domain.prefix.clone());
                drop(domain);
                assert!(!root.exists(), "{root:?} is still there");
                let shm = std::fs::read_dir(SHM_DIR).unwrap().filter_map(Result::ok);
                let ours: Vec<_> = shm.filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).collect();
                assert!(ours.is_empty(), "{ours:?}");
            }
            let (driver, echo) = ipc_channel_pair().unwrap();
            bounce(driver, echo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_targets_and_skips() {
        let plans = plan();
        let ids: Vec<String> = plans.iter().map(|p| p.spec.id()).collect();
        assert_eq!(ids.len(), 9);
        assert!(ids.iter().all(|id| id.starts_with("peers/Connection 64 B round trip (")), "{ids:?}");
        let targets = |suffix: &str| {
            plans.iter().filter(|p| p.spec.name.ends_with(suffix)).map(|p| p.spec.target).collect::<Vec<_>>()
        };
        // Placements in table order: same_core, cross_core, unpinned.
        assert_eq!(targets("(Adaptive) vs iceoryx2 pub/sub (spinning)"), [None, Some(0.5), None]);
        assert_eq!(targets("(Block) vs iceoryx2 event"), [Some(1.0); 3]);
        assert_eq!(targets("(Block) vs ipc-channel"), [Some(1.0); 3]);
    }
}
