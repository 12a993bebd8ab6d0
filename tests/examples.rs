//! Runs every example and checks the deterministic parts of its output.
//!
//! Nothing is built here: `cargo test` builds the examples into
//! `target/<profile>/examples/` beside `target/<profile>/deps/`, where this
//! test binary lives. Each example runs under a timeout (killed past it).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one example may run.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The example binary `name`, next to this test's directory.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

/// Output of a finished example.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The last line.
    fn last(&self) -> Option<&str> {
        self.stdout.lines().last()
    }

    /// Asserts that some line equals `line`.
    fn has_line(&self, line: &str) {
        assert!(self.lines().contains(&line), "no line {line:?} in:\n{}\nstderr:\n{}", self.stdout, self.stderr);
    }

    /// How many lines satisfy `pred`.
    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines().into_iter().filter(|l| pred(l)).count()
    }

    /// The text after `prefix` on the first line that starts with it.
    fn after(&self, prefix: &str) -> &str {
        self.lines()
            .into_iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", self.stdout))
    }
}

/// Reads `r` to the end on a thread; the receiver gets the text.
fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs example `name` under [`TIMEOUT`] and asserts it succeeded.
fn run(name: &str) -> Run {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} not found: examples are built by a plain `cargo test` (or `cargo build --examples`)",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let partial = out.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            panic!("example {name} still running after {TIMEOUT:?}; killed. Output so far:\n{partial}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A grandchild that outlived the example could hold the pipes open: do
    // not wait for end-of-file forever.
    let stdout = out.recv_timeout(Duration::from_secs(10)).expect("stdout still open 10 s after the example exited");
    let stderr = err.recv_timeout(Duration::from_secs(10)).expect("stderr still open 10 s after the example exited");
    eprintln!("example {name}: {:?}", start.elapsed());
    assert!(status.success(), "example {name} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}");
    Run { stdout, stderr }
}

#[test]
fn process_args() {
    let r = run("process_args");
    r.has_line(r#"Process-1 returned "hello x1""#);
    for i in 2..=4 {
        r.has_line(&format!(r#"worker-{i} returned "hi x{i}" (exitcode Some(0))"#));
        assert_eq!(r.count(|l| l.starts_with(&format!("child {i}: worker-{i} (pid "))), 1);
    }
    assert_eq!(r.count(|l| l.starts_with("child 1: Process-1 (pid ") && l.ends_with(r#"says "hello""#)), 1);
    assert_eq!(r.last(), Some("all done"));
}

#[test]
fn process_trait() {
    let r = run("process_trait");
    r.has_line("closure process returned 3");
    r.has_line("spawned process returned 6");
    // 3 + 4 counting lines, each "(child pid) child of (parent pid): i".
    assert_eq!(r.count(|l| l.contains(") child of (")), 7);
    assert_eq!(r.last(), Some("main process done"));
}

#[test]
fn fork_basic() {
    let r = run("fork_basic");
    let parent: u32 = r.after("parent process (").trim_end_matches(") starting").parse().expect("parent pid");
    let child: u32 = r.after("process entered: ").parse().expect("child pid");
    r.has_line(&format!("I ({parent}) created a child process ({child})"));
    r.has_line(&format!("child, its pid is ({child}), its parent's pid is ({parent})"));
    r.has_line(&format!("child {child} reported parent {parent}: pid matches true"));
    r.has_line("parent is me: true");
    r.has_line(&format!("process ending: {child}"));
    assert_eq!(r.last(), Some(format!("process ending: {parent}").as_str()));
}

#[test]
fn spawn_queue() {
    let r = run("spawn_queue");
    r.has_line("start method: Spawn");
    assert_eq!(r.count(|l| l == "Python"), 2, "{}", r.stdout);
    assert_eq!(r.count(|l| l.starts_with("new process started: (")), 2);
}

#[test]
fn get_context() {
    let r = run("get_context");
    r.has_line("Python");
    r.has_line("Fork: Python via Fork");
    r.has_line("Spawn: Python via Spawn");
    r.has_line("ForkServer: Python via ForkServer");
    assert_eq!(r.count(|l| l.starts_with("new process started: (")), 4);
}

#[test]
fn bank_rlock() {
    let r = run("bank_rlock");
    r.has_line("account 1234567 opened with 900");
    assert_eq!(r.count(|l| l.ends_with("withdrew successfully! cash out: 800")), 1, "{}", r.stdout);
    assert_eq!(r.count(|l| l.ends_with("failed to withdraw! insufficient balance")), 2, "{}", r.stdout);
    r.has_line("\tbalance: 100");
    r.has_line("successful withdrawals: 1");
    r.has_line("final balance: 100");
    // Each of the three named processes spoke once.
    for name in ["甲", "乙", "丙"] {
        assert_eq!(r.count(|l| l.starts_with(name)), 1, "{name}: {}", r.stdout);
    }
}

#[test]
fn semaphore_checkpoint() {
    let r = run("semaphore_checkpoint");
    for i in 0..10 {
        assert_eq!(r.count(|l| l.starts_with(&format!("{i} walks into the inspection room ("))), 1, "{}", r.stdout);
        r.has_line(&format!("{i} is checked and leaves"));
    }
    // Never more than four inside: every "(n inside)" has n <= 4.
    for l in r.lines() {
        if let Some((_, rest)) = l.split_once(" walks into the inspection room (") {
            let n: u32 = rest.trim_end_matches(" inside)").parse().expect("count");
            assert!((1..=4).contains(&n), "{l}");
        }
    }
    let most: u32 = r.after("most inside at once: ").trim_end_matches(" (limit 4)").parse().expect("most");
    assert!((1..=4).contains(&most), "{most}");
    r.has_line("everyone checked: 10 people");
    r.has_line("semaphore value at the end: 4");
}

#[test]
fn event_traffic_light() {
    let r = run("event_traffic_light");
    for i in 0..10 {
        assert_eq!(r.count(|l| l == format!("car {i} crosses the crossing")), 1, "car {i}: {}", r.stdout);
        // A car that waited crossed after it waited.
        let lines = r.lines();
        if let Some(w) = lines.iter().position(|l| *l == format!("car {i} waits at the crossing")) {
            let c = lines.iter().position(|l| *l == format!("car {i} crosses the crossing")).expect("crossed");
            assert!(w < c, "car {i} crossed before it waited");
        }
    }
    assert!(r.count(|l| l == "green light") >= 1);
    r.has_line("all 10 cars crossed");
}

#[test]
fn counter_race() {
    let r = run("counter_race");
    r.has_line("each child saw data = 99, 99, 99, 99, 99, 99, 99, 99, 99, 99");
    r.has_line("plain global after 10 children: data = 100");
    r.has_line("with a lock: 40000 (expected 40000)");
    // Lost updates are likely but not certain: only the format is fixed.
    let unlocked = r.after("without a lock: ");
    let total: u64 = unlocked.split(' ').next().and_then(|n| n.parse().ok()).expect("total");
    assert!(total <= 40000, "{unlocked}");
}

/// Every example file has a test above.
#[test]
fn every_example_is_tested() {
    let tested = [
        "process_args",
        "process_trait",
        "fork_basic",
        "spawn_queue",
        "get_context",
        "bank_rlock",
        "semaphore_checkpoint",
        "event_traffic_light",
        "counter_race",
        "array_share",
        "array_rlock",
        "queue_writer_reader",
        "queue_token",
        "queue_producer_consumer",
        "queue_results",
        "pipe_produce_consume",
        "pipe_duplex",
        "pool_apply_async_sleep",
        "pool_map_squares",
        "pool_collect_results",
        "pool_early_exit",
        "pool_feeder_thread",
        "executor_done_callback",
        "pool_lock",
        "manager_dict_ten_processes",
        "manager_dict_list_pids",
        "manager_lock_pool",
        "manager_queue_pool",
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .collect();
    found.sort();
    let mut want: Vec<String> = tested.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(found, want, "examples/ and the tests in tests/examples.rs differ");
}

#[test]
fn array_share() {
    let r = run("array_share");
    for i in 0..10 {
        assert_eq!(r.count(|l| l.starts_with(&format!("process {i}: first element after adding 100 -----> "))), 1);
    }
    assert_eq!(r.last(), Some("temp = [1001, 2, 3, 4]"));
}

#[test]
fn array_rlock() {
    let r = run("array_rlock");
    let said: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("say hi ")).collect();
    let expected: Vec<String> = (0..10).rev().map(|n| format!("say hi {n}")).collect();
    assert_eq!(said, expected, "{}", r.stdout);
    assert_eq!(r.last(), Some("after three locked increments: 3"));
}

#[test]
fn pipe_produce_consume() {
    let r = run("pipe_produce_consume");
    assert_eq!(r.lines(), ["666", "end of file: the producer has exited"], "{}", r.stdout);
}

#[test]
fn pipe_duplex() {
    let r = run("pipe_duplex");
    r.has_line("parent_res I am child_conn");
    r.has_line("child_conn I am parent_conn");
    assert_eq!(r.last(), Some("after the child closed: Some(Closed)"));
}

#[test]
fn queue_writer_reader() {
    let r = run("queue_writer_reader");
    for v in ["A", "B", "C"] {
        r.has_line(&format!("Put {v} to queue..."));
        r.has_line(&format!("Get {v} from queue."));
    }
    let gets: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("Get ")).collect();
    assert_eq!(gets, ["Get A from queue.", "Get B from queue.", "Get C from queue."]);
    assert_eq!(r.last(), Some("reader terminated with exit code Some(-15)"));
}

#[test]
fn queue_token() {
    let r = run("queue_token");
    // "process I took J from the queue, then put I into it": every process
    // ran once, and the J's are the initial 0 plus every process's number but
    // the last one's, which is left in the queue.
    let (mut procs, mut taken) = (Vec::new(), Vec::new());
    for l in r.lines() {
        if let Some(rest) = l.strip_prefix("process ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            procs.push(words[0].parse::<u32>().unwrap());
            taken.push(words[2].parse::<u32>().unwrap());
        }
    }
    procs.sort_unstable();
    assert_eq!(procs, (0..10).collect::<Vec<_>>(), "{}", r.stdout);
    let last: u32 = r.after("the token ended with process ").parse().unwrap();
    let mut expected: Vec<u32> = std::iter::once(0).chain((0..10).filter(|&i| i != last)).collect();
    expected.sort_unstable();
    taken.sort_unstable();
    assert_eq!(taken, expected, "{}", r.stdout);
}

#[test]
fn queue_producer_consumer() {
    let r = run("queue_producer_consumer");
    let consumed: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("Consumer is consuming")).collect();
    assert_eq!(consumed.len(), 4, "{}", r.stdout);
    for (i, l) in consumed.iter().enumerate() {
        assert_eq!(*l, format!("Consumer is consuming {} in the queue.", i + 1));
    }
    r.has_line("Producer finished!");
    assert_eq!(r.last(), Some("All processes finished!"));
}

#[test]
fn queue_results() {
    let r = run("queue_results");
    assert_eq!(r.count(|l| l.contains(" -> ")), 12, "{}", r.stdout);
    r.has_line("10.0.2.10 -> 22");
    assert_eq!(r.last(), Some("12 results collected"));
}

#[test]
fn pool_apply_async_sleep() {
    let r = run("pool_apply_async_sleep");
    let main: u32 = r.after("main process (").trim_end_matches(')').parse().expect("main pid");
    let mut pids = Vec::new();
    for i in 0..10 {
        assert_eq!(r.count(|l| l.starts_with(&format!("running task {i} in worker ("))), 1, "{}", r.stdout);
        let pid: u32 = r.after(&format!("task {i} ran in worker (")).trim_end_matches(')').parse().expect("pid");
        // The worker that said it ran the task is the one whose pid came back.
        r.has_line(&format!("running task {i} in worker ({pid})"));
        pids.push(pid);
    }
    assert!(!pids.contains(&main), "a task ran in the main process: {}", r.stdout);
    pids.sort_unstable();
    pids.dedup();
    assert!(pids.len() <= 5, "more than five workers: {pids:?}");
    assert_eq!(r.last(), Some("all 10 tasks done"));
}

#[test]
fn pool_map_squares() {
    let r = run("pool_map_squares");
    r.has_line("squares of [1, 2, 3]: [1, 4, 9]");
    for max in [50, 100, 150] {
        assert_eq!(r.count(|l| l.ends_with(&format!(") process summing range({max})"))), 1, "{}", r.stdout);
    }
    // The sums, in the input's order, after the dashes.
    let lines = r.lines();
    let dashes = lines.iter().position(|l| *l == "--------------").expect("the dashes");
    assert_eq!(lines[dashes + 1..], ["1225", "4950", "11175"], "{}", r.stdout);
}

#[test]
fn pool_collect_results() {
    let r = run("pool_collect_results");
    r.has_line("results: [0, 1, 1048576, 3486784401]");
    for i in 0..4 {
        assert_eq!(r.count(|l| l.starts_with("child process: ") && l.ends_with(&format!(" - task {i}"))), 1);
    }
    r.has_line("collected 50000 results");
    r.has_line("each result is its task's argument: true");
    assert_eq!(r.last(), Some("sum: 1249975000"));
}

#[test]
fn pool_early_exit() {
    let r = run("pool_early_exit");
    r.has_line("found: true");
    // Results are checked in submission order: 0 to 137.
    r.has_line("checked 138 of 50000 results");
    let rest = r.after("results left unchecked: ");
    let (left, failed) = rest.split_once(", failed by terminate: ").expect("both counts");
    assert_eq!(left, "49862");
    // Only the tasks the workers finished before terminate succeeded.
    let failed: u64 = failed.parse().expect("failed count");
    assert!(failed > 40_000, "{rest}");
}

#[test]
fn pool_feeder_thread() {
    let r = run("pool_feeder_thread");
    r.has_line("the checker found task 137's true after checking 138 results");
    // The feeder is at most the channel's capacity (1000), one result in
    // flight and one being checked ahead of the checker.
    let submitted: u64 = r
        .after("the feeder stopped after submitting ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("submitted count");
    assert!((138..=138 + 1000 + 2).contains(&submitted), "{}", r.stdout);
}

#[test]
fn executor_done_callback() {
    let r = run("executor_done_callback");
    let urls = ["https://www.baidu.com", "https://www.zhihu.com", "https://www.163.com"];
    for url in urls {
        assert_eq!(r.count(|l| l.starts_with(&format!("{url} handled by ("))), 1, "{}", r.stdout);
        assert_eq!(r.count(|l| l == format!("callback: {url}")), 1, "{}", r.stdout);
    }
    // shutdown(true) waits for the tasks, and for the callbacks.
    let lines = r.lines();
    let done = lines.iter().position(|l| *l == "all processes done...").expect("shutdown returned");
    assert!(lines[..done].iter().filter(|l| l.contains(" handled by (")).count() == 3, "{}", r.stdout);
    r.has_line("callbacks ran: 3 (https://www.163.com, https://www.baidu.com, https://www.zhihu.com)");
    let mut completed: Vec<&str> = (1..=3).map(|n| r.after(&format!("completed #{n}: "))).collect();
    completed.sort_unstable();
    assert_eq!(completed, ["https://www.163.com", "https://www.baidu.com", "https://www.zhihu.com"]);
}

#[test]
fn pool_lock() {
    let r = run("pool_lock");
    // An anonymous lock does not travel in a task's arguments.
    assert!(r.after("the lock in a task's arguments: ").contains("anonymous"), "{}", r.stdout);
    let results: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("i am ")).collect();
    assert_eq!(results.len(), 20, "{}", r.stdout);
    for (i, l) in results.iter().enumerate() {
        // In submission order; each task printed "i pid" under the lock.
        let pid = l.strip_prefix(&format!("i am {i} and ")).unwrap_or_else(|| panic!("result {i}: {l}"));
        r.has_line(&format!("{i} {pid}"));
    }
    assert_eq!(r.last(), Some("counter: 20 (expected 20)"));
}

#[test]
fn manager_dict_ten_processes() {
    let r = run("manager_dict_ten_processes");
    // One process at a time: each sees only its own write of "num".
    let modified: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("process ")).collect();
    let expected: Vec<String> =
        (0..10).map(|i| format!(r#"process {i} modified the dict: [("num", {})]"#, 100 + i)).collect();
    assert_eq!(modified, expected, "{}", r.stdout);
    let all: Vec<String> = (0..10).map(|i| format!("({i}, {})", 100 + i)).collect();
    assert_eq!(r.last(), Some(format!("written by ten processes at once: [{}]", all.join(", ")).as_str()));
}

#[test]
fn manager_dict_list_pids() {
    let r = run("manager_dict_list_pids");
    let pairs = r.after("d = [").trim_end_matches(']');
    assert_eq!(pairs.matches("), (").count(), 2, "three entries: {}", r.stdout);
    assert_eq!(r.after("l = [").trim_end_matches(']').split(", ").count(), 3, "{}", r.stdout);
    r.has_line("d's keys, l and the children's pids agree: true");
    // The manager dropped at the end of its scope shut down.
    assert_eq!(r.last(), Some("after the scope, the dict is closed"));
}

#[test]
fn manager_lock_pool() {
    let r = run("manager_lock_pool");
    let results: Vec<&str> = r.lines().into_iter().filter(|l| l.starts_with("i am ")).collect();
    assert_eq!(results.len(), 20, "{}", r.stdout);
    for (i, l) in results.iter().enumerate() {
        // In submission order; each task printed "i pid" under the lock.
        let pid = l.strip_prefix(&format!("i am {i} and ")).unwrap_or_else(|| panic!("result {i}: {l}"));
        r.has_line(&format!("{i} {pid}"));
    }
    // Read-then-write under the manager's lock loses no increment.
    assert_eq!(r.last(), Some("counter: 20 (expected 20)"));
}

#[test]
fn manager_queue_pool() {
    let r = run("manager_queue_pool");
    r.has_line("queue size: 6");
    for ele in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(r.count(|l| l == format!("took {ele} from the queue")), 1, "{}", r.stdout);
        // The answer names a process that ran a task.
        let pid = r.after(&format!("answer: {ele} was taken by process "));
        r.has_line(&format!("running in process {pid}"));
    }
    assert_eq!(r.count(|l| l.starts_with("running in process ")), 6, "{}", r.stdout);
    assert_eq!(r.last(), Some(r#"taken: ["a", "b", "c", "d", "e", "f"], left in the queue: 0"#));
}
