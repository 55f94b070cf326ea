//! The QueueActor's accounting of its claims: how many this worker holds, in
//! all and per destination, and so when and how much to claim next.
//!
//! It sits beside the actor, private to it, rather than in `src/deliveries/`:
//! it is the actor's own scheduling state (actors hold capacity), not part of
//! what a delivery is. It is a plain struct, with no actix and no PostgreSQL,
//! so that its rules are tested on their own; the actor asks it before each
//! claim and tells it of every claim's end.

use std::collections::HashMap;

use crate::db::deliveries::Held;

pub(super) struct Capacity {
    /// `delivery.max_in_flight`.
    max_in_flight: usize,
    /// `delivery.max_in_flight_per_destination`.
    per_destination: usize,
    /// Claimed and not recorded yet: at most `max_in_flight`, which also
    /// bounds the attempts waiting to be written.
    in_flight: usize,
    /// Claimed and not attempted yet, per destination: at most
    /// `per_destination`. A slot frees as soon as its attempt ends, so the
    /// destination's next claims need not wait for the record to be written.
    by_destination: HashMap<i64, usize>,
    /// The last claim found nothing due, and no destination was full.
    exhausted: bool,
}

/// A claim about to be made: the most rows it takes, and what this worker
/// holds already. Room is per destination too: the claim leaves a full
/// destination's deliveries in the queue, where they hold nobody else up.
pub(super) struct ClaimPlan {
    pub limit: usize,
    destination_ids: Vec<i64>,
    counts: Vec<i64>,
    per_destination: i64,
    /// No destination was left out for being full: only then does an empty
    /// claim say there is no due work (a full one may have a backlog).
    none_full: bool,
}

impl ClaimPlan {
    /// The claim's room per destination, as the claim statement takes it.
    pub fn held(&self) -> Held<'_> {
        Held {
            destination_ids: &self.destination_ids,
            counts: &self.counts,
            per_destination: self.per_destination,
        }
    }
}

impl Capacity {
    pub fn new(max_in_flight: usize, per_destination: usize) -> Self {
        Self {
            max_in_flight,
            per_destination,
            in_flight: 0,
            by_destination: HashMap::new(),
            exhausted: false,
        }
    }

    /// The next claim, unless the worker has no room for one. At most a
    /// claim step at a time: the first deliveries of a burst start once a
    /// step's rows are claimed, not the whole room's (nothing is sent while a
    /// claim runs; see `benches/README.md`), and the claim that follows
    /// overlaps their attempts.
    pub fn plan(&self) -> Option<ClaimPlan> {
        let limit = self.room().min(claim_step(self.max_in_flight));
        if limit == 0 {
            return None;
        }
        let per_destination = self.per_destination as i64;
        let (destination_ids, counts): (Vec<i64>, Vec<i64>) = self
            .by_destination
            .iter()
            .map(|(id, count)| (*id, *count as i64))
            .unzip();
        let none_full = counts.iter().all(|count| *count < per_destination);
        Some(ClaimPlan {
            limit,
            destination_ids,
            counts,
            per_destination,
            none_full,
        })
    }

    /// The claim made after `plan` took `claimed`: each destination's number
    /// of rows. True when it took all it asked for, so there may be more, and
    /// the worker still has room for a claim worth making.
    pub fn claimed(
        &mut self,
        plan: &ClaimPlan,
        claimed: impl IntoIterator<Item = (i64, usize)>,
    ) -> bool {
        let mut total = 0;
        for (destination_id, count) in claimed {
            *self.by_destination.entry(destination_id).or_default() += count;
            total += count;
        }
        self.exhausted = total == 0 && plan.none_full;
        self.in_flight += total;
        total == plan.limit && self.room() >= claim_step(self.max_in_flight)
    }

    /// Work may have come (a `NOTIFY`, the poll): claims are worth making
    /// again even after one found nothing.
    pub fn woken(&mut self) {
        self.exhausted = false;
    }

    /// One claimed delivery of `destination_id` is no longer the
    /// destination's to work on (attempted, or given back). True when this
    /// left the destination at or below its low-water mark (see
    /// [`low_water`]) and the worker has room for a claim worth making.
    pub fn attempt_ended(&mut self, destination_id: i64) -> bool {
        let mark = low_water(self.per_destination);
        let Some(count) = self.by_destination.get_mut(&destination_id) else {
            return false;
        };
        *count -= 1;
        let low = *count <= mark;
        if *count == 0 {
            self.by_destination.remove(&destination_id);
        }
        low && !self.exhausted && self.room() >= claim_step(self.max_in_flight)
    }

    /// `count` claims are recorded (or given back). True when this gave the
    /// worker room for a claim worth making, which it did not have before.
    pub fn recorded(&mut self, count: usize) -> bool {
        let step = claim_step(self.max_in_flight);
        let before = self.room();
        self.in_flight = self.in_flight.saturating_sub(count);
        before < step && self.room() >= step && !self.exhausted
    }

    /// `count` claimed deliveries of `destination_id` ended with nothing to
    /// record (given back, not attempted, or held by a DeliveryActor that
    /// died): both their slots free at once. True when a claim is worth making.
    pub fn given_back(&mut self, destination_id: i64, count: usize) -> bool {
        let mut worth_a_claim = false;
        for _ in 0..count {
            worth_a_claim |= self.attempt_ended(destination_id) | self.recorded(1);
        }
        worth_a_claim
    }

    /// Claims the worker may still make.
    fn room(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight)
    }
}

/// Claims are made once half of a destination's room has freed up (and on
/// every `NOTIFY` and poll), not each time one attempt ends, so each takes
/// dozens of rows in one statement, while the destination still has half its
/// room's worth queued in its actor. Once a claim finds nothing, only a
/// `NOTIFY` or the poll claims again: empty claims do not follow each attempt.
fn low_water(limit: usize) -> usize {
    limit / 2
}

/// The least room worth a claim besides `NOTIFY`s and polls, and the most a
/// claim takes: half of `max_in_flight`. Each claim has a fixed cost per
/// destination with due work, which claims of a few rows each would pay over
/// and over when many destinations share the worker's room (see
/// `benches/README.md`). Half the room still leaves every destination's
/// actor a queue while a claim runs.
fn claim_step(max_in_flight: usize) -> usize {
    (max_in_flight / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for 8 claims in all, 4 per destination: claims of 4 at most, low
    /// water at 2.
    fn capacity() -> Capacity {
        Capacity::new(8, 4)
    }

    fn claim(capacity: &mut Capacity, claimed: &[(i64, usize)]) -> bool {
        let plan = capacity.plan().expect("room for a claim");
        capacity.claimed(&plan, claimed.iter().copied())
    }

    #[test]
    fn a_claim_takes_at_most_a_step_and_leaves_room_for_each_destination() {
        let mut capacity = capacity();
        let plan = capacity.plan().unwrap();
        assert_eq!(plan.limit, 4, "half of max_in_flight");
        assert!(plan.held().destination_ids.is_empty());
        assert_eq!(plan.held().per_destination, 4);

        capacity.claimed(&plan, [(1, 3), (2, 1)]);
        let plan = capacity.plan().unwrap();
        assert_eq!(plan.limit, 4);
        let held = plan.held();
        let mut holds: Vec<(i64, i64)> = held
            .destination_ids
            .iter()
            .copied()
            .zip(held.counts.iter().copied())
            .collect();
        holds.sort();
        assert_eq!(holds, [(1, 3), (2, 1)]);

        capacity.claimed(&plan, [(2, 3), (3, 1)]);
        assert!(capacity.plan().is_none(), "8 of 8 held: no room left");
    }

    #[test]
    fn a_full_claim_is_followed_by_another_while_room_is_left() {
        let mut capacity = capacity();
        assert!(claim(&mut capacity, &[(1, 4)]), "took all 4, 4 left");
        assert!(
            !claim(&mut capacity, &[(2, 4)]),
            "took all 4, but no room is left"
        );
        let mut capacity = self::capacity();
        assert!(!claim(&mut capacity, &[(1, 3)]), "took less than it asked");
    }

    #[test]
    fn an_attempt_ending_frees_its_destination_at_low_water() {
        let mut capacity = capacity();
        claim(&mut capacity, &[(1, 4)]);
        assert!(!capacity.attempt_ended(1), "3 left: above low water");
        assert!(capacity.attempt_ended(1), "2 left: at low water");
        assert!(capacity.attempt_ended(1));
        assert!(capacity.attempt_ended(1), "none left");
        assert!(
            capacity.plan().unwrap().held().destination_ids.is_empty(),
            "a destination with nothing held is forgotten"
        );
        assert!(
            !capacity.attempt_ended(1),
            "an unknown destination frees nothing"
        );
    }

    #[test]
    fn ended_attempts_keep_the_worker_room_until_they_are_recorded() {
        let mut capacity = capacity();
        claim(&mut capacity, &[(1, 4)]);
        claim(&mut capacity, &[(2, 4)]);
        for _ in 0..4 {
            assert!(
                !capacity.attempt_ended(1),
                "low, but the worker has no room"
            );
        }
        assert!(capacity.plan().is_none(), "still 8 in flight");
        assert!(!capacity.recorded(3), "3 free: less than a claim step");
        assert!(capacity.recorded(1), "4 free: a claim's worth");
        assert!(!capacity.recorded(1), "already had room");
        assert_eq!(capacity.plan().unwrap().limit, 4);
    }

    #[test]
    fn an_empty_claim_stops_claims_on_room_until_woken_unless_a_destination_was_full() {
        let mut capacity = capacity();
        claim(&mut capacity, &[(1, 4)]);
        claim(&mut capacity, &[]);
        assert!(
            capacity.attempt_ended(1) | capacity.attempt_ended(1),
            "destination 1 was full: its backlog may wait"
        );

        let mut capacity = self::capacity();
        claim(&mut capacity, &[(1, 2)]);
        claim(&mut capacity, &[]);
        assert!(!capacity.attempt_ended(1), "nothing due: no claim on room");
        assert!(!capacity.given_back(1, 1));
        capacity.woken();
        claim(&mut capacity, &[(1, 2)]);
        assert!(capacity.attempt_ended(1), "woken: claims on room again");
    }

    #[test]
    fn a_claim_given_back_frees_both_its_slots_at_once() {
        let mut capacity = capacity();
        claim(&mut capacity, &[(1, 4)]);
        claim(&mut capacity, &[(2, 4)]);
        assert!(!capacity.given_back(1, 1), "3 held, 7 in flight");
        assert!(
            !capacity.given_back(1, 1),
            "2 held, 6 in flight: no room yet"
        );
        assert!(!capacity.given_back(1, 1));
        assert!(
            capacity.given_back(1, 1),
            "4 in flight: a claim's worth of room"
        );
        assert_eq!(capacity.plan().unwrap().held().destination_ids, [2]);
    }

    /// Nothing here forgets a claim on its own: the claims of a DeliveryActor
    /// that died stay counted until they are given back (its outbox reports
    /// them as it is dropped), and then all their room comes back.
    #[test]
    fn the_claims_of_a_dead_delivery_actor_count_until_given_back() {
        let mut capacity = capacity();
        claim(&mut capacity, &[(7, 4)]);
        claim(&mut capacity, &[(8, 4)]);
        assert!(capacity.plan().is_none(), "8 of 8 held");
        assert!(!capacity.attempt_ended(8), "3 of 8's left, above low water");
        assert!(!capacity.recorded(1), "1 free: less than a step");
        assert_eq!(
            capacity.plan().unwrap().limit,
            1,
            "destination 7's 4 still count"
        );
        assert!(
            capacity.given_back(7, 4),
            "5 free: a claim's worth of room again"
        );
        let plan = capacity.plan().unwrap();
        assert_eq!(plan.limit, 4);
        assert_eq!(
            plan.held().destination_ids,
            [8],
            "destination 7 holds nothing"
        );
    }
}
