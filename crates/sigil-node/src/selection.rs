//! Which parties take part in a signature or a decryption.
//!
//! The node that takes a request is a signer when it holds a share (its
//! part runs in process, and clients spread requests over the nodes); the
//! other `t - 1` (or `t`) are drawn at random among the key's parties,
//! weighted by health, so load spreads over the cluster instead of always
//! falling on the lowest ids. A node's weight falls with its recent
//! failures (halving every [`FAILURE_HALF_LIFE`]) and with the latency of
//! the sessions it took part in (an exponential moving average), and a
//! node that failed in the last few seconds is drawn only when no other
//! will do. The draw is weighted sampling without replacement
//! (Efraimidis and Spirakis, "Weighted random sampling with a reservoir",
//! IPL 2006: the `k` largest `u^(1/w)`, compared as `ln(u) / w`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Recent failures count half after this long.
pub const FAILURE_HALF_LIFE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct NodeHealth {
    failures: f64,
    since: Instant,
    latency_ms: f64,
}

/// What this node has seen of the others.
#[derive(Default)]
pub struct Health {
    nodes: Mutex<HashMap<u16, NodeHealth>>,
}

impl Health {
    fn update(&self, node: u16, f: impl FnOnce(&mut NodeHealth)) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let h = nodes.entry(node).or_insert(NodeHealth {
            failures: 0.0,
            since: now,
            latency_ms: 0.0,
        });
        h.failures = decayed(h, now);
        h.since = now;
        f(h);
    }

    /// `node` failed to answer or to finish its part.
    pub fn failed(&self, node: u16) {
        self.update(node, |h| h.failures += 1.0);
    }

    /// `node` took part in a session that took `took`.
    pub fn answered(&self, node: u16, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        self.update(node, |h| {
            h.latency_ms = if h.latency_ms == 0.0 {
                ms
            } else {
                0.8 * h.latency_ms + 0.2 * ms
            };
        });
    }

    /// The weight of `node`: 1 for a healthy node without history.
    pub fn weight(&self, node: u16) -> f64 {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.get(&node).map_or(1.0, |h| {
            let failures = decayed(h, Instant::now());
            1.0 / ((1.0 + 4.0 * failures) * (1.0 + h.latency_ms / 50.0))
        })
    }

    /// Chooses `t` of `candidates`: `me` first when it is one, the rest
    /// drawn by weight (`down` nodes only when no other will do), in the
    /// order drawn. Returns fewer than `t` only if there are fewer
    /// candidates.
    pub fn choose(&self, me: u16, candidates: &[u16], t: usize, down: impl Fn(u16) -> bool) -> Vec<u16> {
        let mut rng = rand::thread_rng();
        let mut chosen: Vec<u16> = Vec::with_capacity(t);
        if candidates.contains(&me) && t > 0 {
            chosen.push(me);
        }
        // Keys ln(u) / w (the log of u^(1/w), which underflows for small
        // w): the largest win; down nodes after all others.
        let mut keyed: Vec<(bool, f64, u16)> = candidates
            .iter()
            .copied()
            .filter(|&n| n != me)
            .map(|n| {
                let w = self.weight(n).max(f64::MIN_POSITIVE);
                let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                (down(n), u.ln() / w, n)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        chosen.extend(
            keyed
                .into_iter()
                .map(|(_, _, n)| n)
                .take(t.saturating_sub(chosen.len())),
        );
        chosen
    }
}

fn decayed(h: &NodeHealth, now: Instant) -> f64 {
    let halves = now.saturating_duration_since(h.since).as_secs_f64() / FAILURE_HALF_LIFE.as_secs_f64();
    h.failures * 0.5f64.powf(halves)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn this_node_first_then_spread_by_weight() {
        let h = Health::default();
        let mut counts = HashMap::new();
        for _ in 0..2000 {
            let c = h.choose(0, &[0, 1, 2, 3, 4], 2, |_| false);
            assert_eq!(c.len(), 2);
            assert_eq!(c[0], 0, "the door node signs");
            *counts.entry(c[1]).or_insert(0) += 1;
        }
        for n in 1..=4 {
            let k = counts.get(&n).copied().unwrap_or(0);
            assert!((350..=650).contains(&k), "node {n} chosen {k} of 2000 times");
        }
    }

    #[test]
    fn failures_and_latency_lower_the_weight_and_down_nodes_come_last() {
        let h = Health::default();
        h.failed(1);
        h.failed(1);
        h.answered(2, Duration::from_millis(500));
        assert!(h.weight(1) < 0.2 && h.weight(2) < 0.2 && h.weight(3) == 1.0);
        let mut picked = HashMap::new();
        for _ in 0..1000 {
            let c = h.choose(0, &[1, 2, 3], 1, |_| false);
            *picked.entry(c[0]).or_insert(0) += 1;
        }
        assert!(picked.get(&3).copied().unwrap_or(0) > 700, "{picked:?}");
        for _ in 0..100 {
            let c = h.choose(9, &[1, 2, 3], 2, |n| n == 3);
            assert!(!c.contains(&3), "a down node only when no other will do: {c:?}");
        }
        assert_eq!(h.choose(9, &[3, 1], 2, |n| n == 3).len(), 2, "but when it must");
        // A badly degraded node still loses to a healthy one, and two
        // degraded ones are drawn at random, not by id.
        for _ in 0..20 {
            h.failed(5);
            h.failed(6);
        }
        let (mut healthy_first, mut second) = (0, HashMap::new());
        for _ in 0..400 {
            let c = h.choose(9, &[5, 6, 7], 2, |_| false);
            if c[0] == 7 {
                healthy_first += 1;
                *second.entry(c[1]).or_insert(0) += 1;
            }
        }
        assert!(healthy_first > 360, "{healthy_first} of 400");
        assert!(
            second.get(&5).copied().unwrap_or(0) > 100 && second.get(&6).copied().unwrap_or(0) > 100,
            "{second:?}"
        );
    }
}
