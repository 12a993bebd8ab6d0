//! The checkpoint of seed 004: `Semaphore(4)` lets at most four of ten
//! processes into the inspection room at once.
//!
//! Each process also counts, in shared memory and under a `Lock`, how many
//! are inside, and records the largest number seen, so that the program can
//! show the semaphore at work.
//!
//! Run with `cargo run --example semaphore_checkpoint`.

use std::sync::Arc;
use std::time::Duration;

use shmproc::{Lock, Process, Segment, Semaphore, StartMethod};

const PEOPLE: u64 = 10;
const ROOM: u32 = 4;

/// Two `u64` counters in shared memory: inside now (offset 0), most ever (8).
struct Room {
    counts: Segment,
    lock: Lock,
}

impl Room {
    fn read(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        self.counts.read_at(offset, &mut b).expect("in range");
        u64::from_le_bytes(b)
    }

    fn write(&self, offset: usize, v: u64) {
        self.counts.write_at(offset, &v.to_le_bytes()).expect("in range");
    }

    /// Adds `delta` to the number inside; returns the new number.
    fn enter_or_leave(&self, entering: bool) -> u64 {
        let _guard = self.lock.lock().expect("no process dies holding it");
        let inside = if entering { self.read(0) + 1 } else { self.read(0) - 1 };
        self.write(0, inside);
        if inside > self.read(8) {
            self.write(8, inside);
        }
        inside
    }
}

fn check_person(i: u64, sem: &Semaphore, room: &Room) {
    sem.acquire(); // four keys for the room
    let inside = room.enter_or_leave(true);
    println!("{i} walks into the inspection room ({inside} inside)");
    // Python sleeps random.uniform(0, 1); a short pseudo-random pause here.
    std::thread::sleep(Duration::from_millis(20 + (i * 37) % 50));
    room.enter_or_leave(false);
    println!("{i} is checked and leaves");
    sem.release().expect("released once per acquire");
}

fn main() -> shmproc::Result<()> {
    let sem = Semaphore::new(ROOM)?;
    let room = Arc::new(Room { counts: Segment::anonymous(16)?, lock: Lock::new()? });

    let mut procs = Vec::new();
    for i in 0..PEOPLE {
        let (sem, room) = (sem.clone(), Arc::clone(&room));
        let mut p = Process::builder().start_method(StartMethod::Fork).closure(move || check_person(i, &sem, &room));
        p.start()?;
        procs.push(p);
    }
    for mut p in procs {
        p.join()?;
    }
    println!("everyone checked: {PEOPLE} people");
    println!("most inside at once: {} (limit {ROOM})", room.read(8));
    println!("semaphore value at the end: {}", sem.get_value());
    Ok(())
}
