//! The raw baselines, written the way `baselines/os/*.c` measures them: what a
//! cross-process hand-off costs with nothing but shared memory (and the futex).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::pingpong::Side;
use super::shm::{LINE, SharedWords};

/// One side of a busy-spin ping-pong on a single shared cache line
/// (`os/spin_pingpong_1line`): no system call, the floor of any spinning design.
#[derive(Debug)]
pub(crate) struct SpinSide {
    words: SharedWords,
    /// The value the next `send` stores or the next `recv` waits for.
    /// Both sides count 1, 2, 3, …: the driver sends the odd values and the
    /// echo the even ones.
    next: u64,
}

/// A spin ping-pong pair: (driver side, echo side).
pub(crate) fn spin() -> shmproc::Result<(SpinSide, SpinSide)> {
    let words = SharedWords::new(LINE)?;
    Ok((SpinSide { words: words.clone(), next: 1 }, SpinSide { words, next: 1 }))
}

impl SpinSide {
    fn word(&self) -> &AtomicU64 {
        self.words.u64_at(0)
    }
}

impl Side for SpinSide {
    fn send(&mut self) -> shmproc::Result<()> {
        // Release: pairs with the peer's Acquire load in `recv`.
        self.word().store(self.next, Ordering::Release);
        self.next += 1;
        Ok(())
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        while self.word().load(Ordering::Acquire) != self.next {
            std::hint::spin_loop();
        }
        self.next += 1;
        Ok(())
    }
}

/// One side of a pure futex ping-pong (`os/futex_pingpong`): each side stores
/// a sequence number in its own line and always calls `FUTEX_WAKE`; the waiter
/// calls `FUTEX_WAIT` until the number it waits for appears. No spinning: the
/// floor of any blocking design.
#[derive(Debug)]
pub(crate) struct FutexSide {
    words: SharedWords,
    /// Byte offset of the word this side writes (the peer waits on it).
    out: usize,
    /// Byte offset of the word this side waits on.
    inp: usize,
    /// Last sequence number sent.
    sent: u32,
    /// Last sequence number received.
    received: u32,
}

/// A futex ping-pong pair: (driver side, echo side).
pub(crate) fn futex() -> shmproc::Result<(FutexSide, FutexSide)> {
    let words = SharedWords::new(2 * LINE)?;
    let side = |out, inp, words| FutexSide { words, out, inp, sent: 0, received: 0 };
    Ok((side(0, LINE, words.clone()), side(LINE, 0, words)))
}

impl Side for FutexSide {
    fn send(&mut self) -> shmproc::Result<()> {
        self.sent = self.sent.wrapping_add(1);
        let word = self.words.u32_at(self.out);
        // Release: pairs with the peer's Acquire load in `recv`.
        word.store(self.sent, Ordering::Release);
        futex_op(word, libc::FUTEX_WAKE, 1);
        Ok(())
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        let want = self.received.wrapping_add(1);
        let word = self.words.u32_at(self.inp);
        loop {
            let v = word.load(Ordering::Acquire);
            if v == want {
                break;
            }
            futex_op(word, libc::FUTEX_WAIT, v);
        }
        self.received = want;
        Ok(())
    }
}

/// `FUTEX_WAIT` (sleep while `*word == val`) or `FUTEX_WAKE` (wake `val`
/// sleepers), without `FUTEX_PRIVATE_FLAG`: the word is shared between
/// processes. Errors (`EAGAIN`, `EINTR`) need no handling: callers re-check.
fn futex_op(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: `word` is a live, aligned 4-byte word for the whole call; no
    // timeout or second address is passed.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, std::ptr::null::<libc::timespec>(), 0usize, 0u32);
    }
}
