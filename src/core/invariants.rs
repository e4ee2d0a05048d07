//! The core's invariants as code: what must hold between any two events,
//! whatever happened before. The list (with numbers) is in `mod.rs`; the
//! ones that need to see a step's actions, not only the state, are checked
//! by the model test (`model.rs`). Test-only: the shell never calls this.

use super::*;

/// Ok, or the first invariant the state breaks, said in words.
pub(crate) fn check_invariants(sup: &Supervisor, now: Instant) -> Result<(), String> {
    let running = sup.phase == Phase::Running;

    // 1. Surge: one incoming worker at most, only during a reload, and
    //    never more than N + 1 workers that are not draining.
    let incoming = sup.slots.iter().filter(|s| s.incoming.is_some()).count();
    if incoming > 1 {
        return Err(format!("{incoming} incoming workers at once"));
    }
    if incoming == 1 && sup.reload.is_none() && running {
        // (A stop ends the reload; its incoming worker stops with the rest.)
        return Err("an incoming worker without a reload".into());
    }
    if sup.reload.is_some() && !running {
        return Err("a reload outlived the stop".into());
    }
    let counted = sup
        .slots
        .iter()
        .filter(|s| s.state != SlotState::Retired)
        .count();
    if running && counted != sup.settings.instances {
        return Err(format!(
            "{counted} slots in use for {} instances",
            sup.settings.instances
        ));
    }
    let serving = sup.live_workers() - sup.retirees.len();
    if serving > sup.settings.instances + 1 {
        return Err(format!(
            "{serving} workers not draining for {} instances",
            sup.settings.instances
        ));
    }

    // 4. Every tracked pid is tracked once.
    let mut pids = sup.worker_pids();
    pids.sort_unstable();
    if pids.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("a pid is tracked twice: {pids:?}"));
    }
    // Once stopping, nothing waits to be restarted.
    if !running
        && sup
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Backoff { .. }))
    {
        return Err("a slot waits for a restart after the stop began".into());
    }

    // 5. Exited only with nothing left.
    if sup.phase == Phase::Exited && sup.live_workers() != 0 {
        return Err(format!(
            "exited with {} workers still tracked",
            sup.live_workers()
        ));
    }

    // 7. Ready only when serving.
    if sup.readiness().is_ok() {
        if !running || sup.prestopped {
            return Err(format!("ready while {}", sup.phase_name()));
        }
        if sup.steerable().is_empty() || !sup.fully_up {
            return Err("ready with no ready worker, or before all were up once".into());
        }
    }

    // 8. Every pending timer is at or after next_deadline.
    let deadline = sup.next_deadline();
    let mut pending: Vec<(&str, Instant)> = Vec::new();
    match sup.phase {
        Phase::StopDelay { until } => pending.push(("stop delay", until)),
        Phase::Stopping { kill_at } => pending.push(("grace", kill_at)),
        _ => {}
    }
    for s in &sup.slots {
        if let (true, SlotState::Backoff { until }) = (running, s.state) {
            pending.push(("backoff", until));
        }
        for w in [s.worker(), s.incoming_worker()].into_iter().flatten() {
            if running && !w.ready {
                pending.push(("listen timeout", w.ready_by));
            }
        }
    }
    for d in &sup.retirees {
        if let Some(at) = d.kill_at {
            pending.push(("drain kill", at));
        }
    }
    for (what, at) in pending {
        if deadline.is_none_or(|d| d > at) {
            return Err(format!(
                "the {what} timer at {:?} from now is not covered by next_deadline {:?}",
                at.saturating_duration_since(now),
                deadline.map(|d| d.saturating_duration_since(now))
            ));
        }
    }
    Ok(())
}
