//! The write order alone: turns follow tickets, every ticket is done once, exclusive holders
//! wait for writes in flight and keep new ones out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::WriteOrder;

/// Waits until `done` holds, for at most 20 s (a loaded machine schedules threads late).
fn wait_for(done: impl Fn() -> bool) {
    let since = Instant::now();
    while !done() && since.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Writes draw their tickets in one order (commit order) and reach their turns on
    /// threads woken in another: they finish in ticket order, each once, whatever the order
    /// their threads get there in.
    #[test]
    fn writes_finish_in_the_order_of_their_tickets(
        wake in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(),
        without_ticket in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let order = WriteOrder::default();
        let finished = Mutex::new(Vec::new());
        let flights: Vec<_> = (0..8).map(|_| order.enter(|| {})).collect();
        // Drawn in index order, as a batch's leader draws them before its commit; some
        // writes fail before theirs.
        let mut tickets = Vec::new();
        for (i, f) in flights.iter().enumerate() {
            if !without_ticket[i] {
                f.draw();
                tickets.push(i);
            }
        }
        let mut flights: Vec<_> = flights.into_iter().map(Some).collect();
        std::thread::scope(|s| {
            for (n, &i) in wake.iter().enumerate() {
                let flight = flights[i].take().unwrap();
                let finished = &finished;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_micros(50 * n as u64));
                    flight.wait_turn();
                    if flight.drew() {
                        finished.lock().unwrap().push(i);
                    }
                    flight.finish(|| {});
                });
            }
        });
        prop_assert_eq!(finished.into_inner().unwrap(), tickets.clone());
        prop_assert_eq!(order.tickets(), (tickets.len() as u64, tickets.len() as u64));
        // Nothing left in flight: the order can be held at once.
        prop_assert!(order.try_exclusive().is_some());
    }
}

#[test]
fn a_write_dropped_without_finishing_takes_its_turn_and_frees_the_next() {
    let order = WriteOrder::default();
    let first = order.enter(|| {});
    let second = order.enter(|| {});
    first.draw();
    second.draw();
    std::thread::scope(|s| {
        let next = s.spawn(|| {
            second.wait_turn();
            second.finish(|| {});
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!next.is_finished(), "the second write waits for the first");
        // A write that panicked or failed after drawing: its drop is its finish.
        drop(first);
        next.join().unwrap();
    });
    assert_eq!(order.tickets(), (2, 2));
}

/// Every write waiting for its turn, each ticket done wakes the next write alone: waking
/// them all cost a flood of one tenant's writes several thread switches per write.
#[test]
fn a_ticket_done_wakes_only_the_write_whose_turn_is_next() {
    let order = WriteOrder::default();
    let flights: Vec<_> = (0..8).map(|_| order.enter(|| {})).collect();
    for f in &flights {
        f.draw();
    }
    let mut flights = flights.into_iter();
    let first = flights.next().unwrap();
    let finished = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, flight) in flights.enumerate() {
            let finished = &finished;
            s.spawn(move || {
                flight.wait_turn();
                finished.lock().unwrap().push(i + 1);
                flight.finish(|| {});
            });
        }
        wait_for(|| order.lock().turns.len() == 7);
        assert_eq!(
            order.lock().turns.len(),
            7,
            "every later write waits for its turn"
        );
        first.finish(|| {});
    });
    assert_eq!(finished.into_inner().unwrap(), (1..8).collect::<Vec<_>>());
    assert_eq!(order.tickets(), (8, 8));
    assert!(order.lock().turns.is_empty());
    // A condition variable may wake a thread spuriously; woken at every turn, the waiting
    // writes would count 21 here (6 + 5 + … + 1).
    let early = order.early_wake_ups();
    assert!(early <= 2, "{early} writes woken before their turn");
}

#[test]
fn an_exclusive_holder_waits_for_writes_in_flight_and_keeps_new_ones_out() {
    let order = WriteOrder::default();
    let marked = AtomicUsize::new(0);
    let cleared = AtomicUsize::new(0);
    let flight = order.enter(|| {
        marked.fetch_add(1, Ordering::SeqCst);
    });
    // A second write while one is in flight is not the first.
    let other = order.enter(|| {
        marked.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(marked.load(Ordering::SeqCst), 1);
    assert!(order.try_exclusive().is_none(), "writes are in flight");
    let held = AtomicBool::new(false);
    let entered_late = AtomicBool::new(false);
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            let _exclusive = order.exclusive();
            held.store(true, Ordering::SeqCst);
            // A write arriving now waits for this holder, which sees nothing in flight.
            std::thread::sleep(Duration::from_millis(30));
            assert!(!entered_late.load(Ordering::SeqCst));
        });
        // Waiting (not merely started): a write arriving from now on must wait too.
        wait_for(|| order.state.lock().unwrap().excluding == 1);
        assert!(
            !held.load(Ordering::SeqCst),
            "held while writes were in flight"
        );
        let late = s.spawn(|| {
            // Waits while the holder waits: a stream of writes cannot starve it.
            let f = order.enter(|| {});
            entered_late.store(true, Ordering::SeqCst);
            f.finish(|| {});
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!entered_late.load(Ordering::SeqCst));
        flight.finish(|| {
            cleared.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            cleared.load(Ordering::SeqCst),
            0,
            "another write is in flight"
        );
        other.finish(|| {
            cleared.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(cleared.load(Ordering::SeqCst), 1, "the last write clears");
        holder.join().unwrap();
        late.join().unwrap();
    });
    assert!(held.load(Ordering::SeqCst) && entered_late.load(Ordering::SeqCst));
}

#[test]
fn waiting_for_applied_writes_waits_for_those_drawn_before_and_not_after() {
    let order = WriteOrder::default();
    let early = order.enter(|| {});
    early.draw();
    let late = order.enter(|| {});
    std::thread::scope(|s| {
        // The target `wait_applied` takes when only `early` has drawn.
        let waiter = s.spawn(|| order.wait_done(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "a drawn write is not applied yet");
        // A write that draws later is not waited for.
        late.draw();
        early.finish(|| {});
        waiter.join().unwrap();
    });
    late.finish(|| {});
    // Both drawn and done: returns at once.
    order.wait_applied();
    assert_eq!(order.tickets(), (2, 2));
}

#[test]
fn many_threads_entering_drawing_and_finishing_leave_the_order_empty() {
    let order = WriteOrder::default();
    let exclusives = AtomicUsize::new(0);
    let in_flight = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (order, exclusives, in_flight) = (&order, &exclusives, &in_flight);
            s.spawn(move || {
                for i in 0..300 {
                    if (i + t) % 17 == 0 {
                        let _held = order.exclusive();
                        assert_eq!(in_flight.load(Ordering::SeqCst), 0);
                        exclusives.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let f = order.enter(|| {});
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    if i % 3 != 0 {
                        f.draw();
                    }
                    f.wait_turn();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    f.finish(|| {});
                }
            });
        }
    });
    wait_for(|| order.try_exclusive().is_some());
    let (drawn, done) = order.tickets();
    assert_eq!(drawn, done);
    assert!(exclusives.load(Ordering::SeqCst) > 0);
}
