//! The order in which a claim serves running batches: fair shares across workspaces and,
//! within each, across its batches. One rule for every store engine (each claims in SQL of
//! its own, in this order).

use std::collections::BTreeMap;

/// What a node keeps between its claims, so that the order rotates from one to the next.
#[derive(Debug, Default)]
pub struct ClaimOrder {
    /// The batch served first last time, so the next claim starts after it (round robin).
    last_batch: i64,
    /// Counts claims, to rotate which workspace is served first.
    rotation: usize,
}

impl ClaimOrder {
    /// The running batches (`(batch key, workspace)`) grouped by workspace, in the order
    /// this claim serves them: workspaces and, within each, batches rotate from one claim to
    /// the next, so that when there is less room than batches, a different one goes first
    /// each time.
    pub fn round_robin(&mut self, running: Vec<(i64, String)>) -> Vec<Vec<i64>> {
        let mut by_workspace: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (pk, workspace) in running {
            by_workspace.entry(workspace).or_default().push(pk);
        }
        let mut workspaces: Vec<Vec<i64>> = by_workspace.into_values().collect();
        for batches in &mut workspaces {
            batches.sort_unstable();
            let start = batches
                .iter()
                .position(|&pk| pk > self.last_batch)
                .unwrap_or(0);
            batches.rotate_left(start);
        }
        if !workspaces.is_empty() {
            self.rotation = self.rotation.wrapping_add(1);
            let start = self.rotation % workspaces.len();
            workspaces.rotate_left(start);
        }
        if let Some(&first) = workspaces.first().and_then(|w| w.first()) {
            self.last_batch = first;
        }
        workspaces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspaces_and_batches_take_turns_going_first() {
        let running = || {
            vec![
                (1, "a".to_owned()),
                (2, "a".to_owned()),
                (3, "b".to_owned()),
            ]
        };
        let mut order = ClaimOrder::default();
        let first = order.round_robin(running());
        let second = order.round_robin(running());
        let third = order.round_robin(running());
        assert_ne!(
            first[0], second[0],
            "the other workspace goes first next time"
        );
        assert_eq!(first.len(), 2);
        // Workspace a's batches rotate between its turns.
        let a_turns: Vec<i64> = [&first, &second, &third]
            .iter()
            .flat_map(|w| w.iter().filter(|b| b.contains(&1)).map(|b| b[0]))
            .collect();
        assert!(a_turns.windows(2).any(|w| w[0] != w[1]), "{a_turns:?}");
    }
}
