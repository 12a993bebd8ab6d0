//! The bank account of seed 001: three processes withdraw from one account;
//! an `RLock` makes each withdrawal atomic, and is taken recursively.
//!
//! Python keeps `_balance` in the `Account` object, so each forked child
//! withdraws from its own copy. Here the balance lives in shared memory (8
//! bytes of a `Segment`), so the three processes really share one account:
//! exactly one withdrawal of 800 out of 900 succeeds.
//!
//! Run with `cargo run --example bank_rlock`.

use std::sync::Arc;
use std::time::Duration;

use shmproc::{Process, RLock, Segment, StartMethod, current_process};

/// An account shared by every process that has a handle on it.
struct Account {
    number: String,
    /// The balance: a `u64` at offset 0 of an anonymous segment (forked
    /// children share it).
    balance: Segment,
    lock: RLock,
}

impl Account {
    fn new(number: &str, balance: u64) -> shmproc::Result<Self> {
        let account = Account { number: number.to_owned(), balance: Segment::anonymous(8)?, lock: RLock::new()? };
        account.set_balance(balance)?;
        Ok(account)
    }

    /// Reads the balance under the lock (taken recursively when the caller
    /// already holds it, as `draw` does).
    fn balance(&self) -> shmproc::Result<u64> {
        let _guard = self.lock.lock()?;
        let mut bytes = [0u8; 8];
        self.balance.read_at(0, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn set_balance(&self, value: u64) -> shmproc::Result<()> {
        let _guard = self.lock.lock()?;
        self.balance.write_at(0, &value.to_le_bytes())
    }

    /// Python's `draw`: check and withdraw under one lock, so that no other
    /// process can withdraw in between. Returns whether it succeeded.
    fn draw(&self, amount: u64) -> shmproc::Result<bool> {
        let _guard = self.lock.lock()?;
        let name = current_process().name;
        let balance = self.balance()?; // takes the RLock a second time
        if balance >= amount {
            println!("{name} withdrew successfully! cash out: {amount}");
            std::thread::sleep(Duration::from_millis(1));
            self.set_balance(balance - amount)?; // and again
            println!("\tbalance: {}", self.balance()?);
            Ok(true)
        } else {
            println!("{name} failed to withdraw! insufficient balance");
            Ok(false)
        }
    }
}

fn main() -> shmproc::Result<()> {
    let account = Arc::new(Account::new("1234567", 900)?);
    println!("account {} opened with {}", account.number, account.balance()?);

    // Three processes withdraw 800 each from the same account.
    let mut procs = Vec::new();
    for name in ["甲", "乙", "丙"] {
        let account = Arc::clone(&account);
        // A closure target needs the Fork start method (the default).
        let mut p = Process::builder()
            .name(name)
            .start_method(StartMethod::Fork)
            .closure(move || account.draw(800).unwrap_or(false));
        p.start()?;
        procs.push(p);
    }
    let mut successes = 0;
    for mut p in procs {
        if p.join()? {
            successes += 1;
        }
    }
    println!("successful withdrawals: {successes}");
    println!("final balance: {}", account.balance()?);
    Ok(())
}
