//! The low-priority half of a background worker: a thread at the lowest OS priority that runs
//! the worker's jobs and nothing else, while the worker's own thread, at normal priority, does
//! the pool's bookkeeping (pops, charges, wake-ups) under the pool's lock and delivers each
//! job's result.
//!
//! Why two threads: a thread at `nice 19` that takes a lock every tenant's requests take is
//! a priority inversion waiting to happen. The OS preempts it the moment a normal thread
//! wakes, and while normal threads keep the cores busy it may not run again for tens of
//! milliseconds, holding the lock all that time. Background workers that popped their own
//! jobs held the pool's lock that way: under one tenant's write flood another tenant's search
//! waited 60–120 ms to be queued (docs/benchmarks.md, 6 Dec). Here the low-priority thread
//! takes no lock of the pool's, and a job's answer (a wake-up of the async task awaiting it,
//! which takes the async runtime's own lock) is sent from the normal thread too. What a job
//! itself locks is its own affair: background jobs only read (`Demotable`).
//!
//! The low-priority thread also asks for the shortest time slice (`crate::slice`): picked to
//! run, a `nice 19` thread otherwise keeps the core for the kernel's default slice before a
//! normal thread that woke meanwhile gets it.

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::cpu::{take_job_cpu_adjustment, thread_cpu_ns};
use crate::priority::{BackgroundPriority, lower_for_background};

/// What a job leaves to be done on the worker's own thread: sending its result.
pub(crate) type Deliver = Box<dyn FnOnce() + Send + 'static>;

/// A job as the pool holds it: runs the caller's closure and returns the sending of its result.
pub(crate) type Work = Box<dyn FnOnce() -> Deliver + Send + 'static>;

/// What the low-priority thread tells the worker's own thread while it runs a job.
pub(crate) enum Event {
    /// The job began a declared wait (`crate::blocking`): the worker tells the pool, which
    /// may run another job in its place.
    WaitBegins,
    /// The declared wait ended.
    WaitEnds,
    /// The job ended: its CPU time (`None` where it cannot be read) and the sending of its
    /// result.
    Done(Option<u64>, Deliver),
}

/// A running low-priority thread and the channels to it. Dropping it stops the thread (once
/// its job, if any, ends) and joins it.
pub(crate) struct Executor {
    jobs: Option<Sender<Work>>,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl Executor {
    /// Starts the thread as `name`; it lowers its priority to `priority`, runs `on_start` if
    /// that worked, and reports how it went. An executor whose priority could not be lowered
    /// is returned all the same, with the error: the caller decides.
    pub(crate) fn start(
        name: String,
        priority: BackgroundPriority,
        on_start: Option<fn()>,
    ) -> io::Result<(Executor, io::Result<()>)> {
        let (jobs_tx, jobs_rx) = channel::<Work>();
        let (events_tx, events_rx) = channel();
        let (lowered_tx, lowered_rx) = channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let lowered = lower_for_background(priority);
            if let (Ok(()), Some(start)) = (&lowered, on_start) {
                start();
            }
            crate::blocking::set_executor(events_tx.clone());
            let _ = lowered_tx.send(lowered);
            for work in jobs_rx {
                // Whatever an earlier job left is not this job's (see `adjust_job_cpu`).
                take_job_cpu_adjustment();
                let before = thread_cpu_ns();
                let deliver = work();
                let cost = match (before, thread_cpu_ns()) {
                    (Some(before), Some(after)) => Some(
                        after
                            .saturating_sub(before)
                            .saturating_add_signed(take_job_cpu_adjustment()),
                    ),
                    _ => None,
                };
                if events_tx.send(Event::Done(cost, deliver)).is_err() {
                    return;
                }
            }
        })?;
        let lowered = lowered_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the executor thread ended at its start")));
        let executor = Executor {
            jobs: Some(jobs_tx),
            events: events_rx,
            thread: Some(thread),
        };
        Ok((executor, lowered))
    }

    /// Runs `work` on the low-priority thread and waits for it, telling the pool of its
    /// declared waits meanwhile: its CPU time (`None` where it cannot be read) and the sending
    /// of its result, for the caller's thread.
    pub(crate) fn run(&self, work: Work) -> (Option<u64>, Deliver) {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(work));
        match sent {
            Some(Ok(())) => loop {
                match self.events.recv() {
                    Ok(Event::WaitBegins) => crate::blocking::relay_wait(true),
                    Ok(Event::WaitEnds) => crate::blocking::relay_wait(false),
                    Ok(Event::Done(cost, deliver)) => break (cost, deliver),
                    Err(_) => break (None, Box::new(|| ())),
                }
            },
            // The thread is gone (it cannot panic: jobs catch their panics): run the job here,
            // at this thread's priority, rather than lose it.
            Some(Err(std::sync::mpsc::SendError(work))) => (None, work()),
            None => (None, Box::new(|| ())),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_on_the_low_priority_thread_and_its_result_is_sent_by_the_caller() {
        let (executor, lowered) =
            Executor::start("exec-test".into(), BackgroundPriority::Nice19, None).expect("start");
        lowered.expect("nice 19 is allowed to any thread");
        let caller = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (cost, deliver) = executor.run(Box::new(move || {
            let ran_on = std::thread::current().id();
            let low = crate::blocking::on_background_worker();
            // Some CPU to measure.
            let mut x = 0u64;
            for i in 0..200_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
            Box::new(move || {
                let _ = tx.send((ran_on, low, std::thread::current().id(), x));
            })
        }));
        assert!(
            rx.try_recv().is_err(),
            "nothing is sent before the caller delivers"
        );
        deliver();
        let (ran_on, low, sent_from, _) = rx.recv().expect("delivered");
        assert_ne!(ran_on, caller, "the job ran on the executor's thread");
        assert!(low, "the job's thread knows it runs at low priority");
        assert_eq!(
            sent_from, caller,
            "the result was sent from the caller's thread"
        );
        assert!(
            cost.is_some_and(|ns| ns > 0),
            "its CPU time was measured: {cost:?}"
        );
        assert!(!crate::blocking::on_background_worker());
    }

    /// A declared wait of a job on the low-priority thread reaches the pool through the
    /// worker's own thread, in order, before the job's end.
    #[test]
    fn a_declared_wait_is_told_to_the_pool_by_the_workers_thread() {
        use std::sync::{Arc, Mutex};

        use crate::blocking::Pool;
        use crate::scheduler::Kind;

        #[derive(Default)]
        struct Told(Mutex<Vec<(&'static str, std::thread::ThreadId)>>);
        impl Pool for Told {
            fn wait_begins(self: Arc<Self>, _: Kind) {
                let me = std::thread::current().id();
                self.0.lock().unwrap().push(("begins", me));
            }
            fn wait_ends(&self, _: Kind) {
                let me = std::thread::current().id();
                self.0.lock().unwrap().push(("ends", me));
            }
        }
        let told = Arc::new(Told::default());
        crate::blocking::set_worker(Arc::clone(&told) as Arc<dyn Pool>, Kind::Background);
        let (executor, _) =
            Executor::start("exec-wait".into(), BackgroundPriority::Nice19, None).expect("start");
        let (_, deliver) = executor.run(Box::new(|| {
            let waited = crate::blocking(|| std::thread::current().id());
            Box::new(move || assert_ne!(waited, std::thread::current().id()))
        }));
        deliver();
        let me = std::thread::current().id();
        assert_eq!(*told.0.lock().unwrap(), [("begins", me), ("ends", me)]);
    }

    #[test]
    fn dropping_it_stops_and_joins_the_thread() {
        let (executor, _) =
            Executor::start("exec-drop".into(), BackgroundPriority::Nice19, None).expect("start");
        let (_, deliver) = executor.run(Box::new(|| Box::new(|| ())));
        deliver();
        drop(executor);
    }
}
