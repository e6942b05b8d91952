//! The tunnel's unit tests: requests, responses, the window and what ends them.

use super::*;

fn fetch(url: &str) -> Request {
    Request::WebFetch { url: url.into() }
}

fn body(data: &str) -> ResponsePart {
    ResponsePart::Body { data: data.into() }
}

/// The next line for the bridge, if one is waiting.
async fn line(outbound: &mut Outbound) -> Option<Outgoing> {
    tokio::time::timeout(Duration::from_millis(10), outbound.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn answers_reach_their_own_request() -> Result<(), TunnelError> {
    let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
    let mut a = tunnel.send(fetch("a")).await?;
    let mut b = tunnel.send(fetch("b")).await?;
    let first = requests.recv().await.ok_or(TunnelError::Closed)?;
    let expected = Outgoing::Request {
        id: a.id(),
        request: fetch("a"),
        window: None,
    };
    assert_eq!(first, expected);
    let Some(Outgoing::Request { id: id_b, .. }) = requests.recv().await else {
        return Err(TunnelError::Closed);
    };
    let id_a = a.id();
    assert_ne!(id_a, id_b);
    tunnel.deliver(id_b, body("for b"));
    tunnel.deliver(id_a, body("for a"));
    tunnel.deliver(id_a, ResponsePart::End);
    assert_eq!(a.next().await?, body("for a"));
    assert_eq!(a.next().await?, ResponsePart::End);
    assert_eq!(b.next().await?, body("for b"));
    // `a` is complete and forgotten; dropping `b` forgets it too, and asks the bridge
    // to stop performing it. A complete answer is never aborted.
    assert_eq!(tunnel.pending(), 1);
    drop(a);
    drop(b);
    assert_eq!(tunnel.pending(), 0);
    assert_eq!(line(&mut requests).await, Some(Outgoing::Abort(id_b)));
    assert_eq!(
        line(&mut requests).await,
        None,
        "a complete answer was aborted"
    );
    tunnel.deliver(id_b, body("late"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_progress_stalls() -> Result<(), TunnelError> {
    let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
    let mut response = tunnel.send(fetch("slow")).await?;
    tunnel.deliver(response.id(), body("first"));
    assert_eq!(response.next().await?, body("first"));
    let start = tokio::time::Instant::now();
    assert_eq!(
        response.next().await,
        Err(TunnelError::Stalled(NO_PROGRESS))
    );
    assert_eq!(start.elapsed(), NO_PROGRESS);
    Ok(())
}

#[tokio::test]
async fn without_flow_control_a_reader_too_far_behind_loses_its_answer() -> Result<(), TunnelError>
{
    // A bridge of version 1 grants no credit and does not wait for the box.
    let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
    tunnel.reattached(1);
    let mut response = tunnel.send(fetch("big")).await?;
    for _ in 0..=RESPONSE_QUEUE {
        tunnel.deliver(response.id(), body("x"));
    }
    for _ in 0..RESPONSE_QUEUE {
        assert_eq!(response.next().await?, body("x"));
    }
    assert_eq!(response.next().await, Err(TunnelError::Lost));
    Ok(())
}

#[tokio::test]
async fn with_flow_control_the_reader_grants_what_it_takes() -> Result<(), TunnelError> {
    let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
    tunnel.reattached(clawpen_protocol::VERSION);
    let mut response = tunnel.send(fetch("big")).await?;
    let id = response.id();
    let expected = Outgoing::Request {
        id,
        request: fetch("big"),
        window: Some(RESPONSE_WINDOW),
    };
    assert_eq!(requests.recv().await, Some(expected));
    // The bridge sends the whole window; nothing is owed until the reader takes parts.
    for _ in 0..RESPONSE_WINDOW {
        tunnel.deliver(id, body("x"));
    }
    assert_eq!(line(&mut requests).await, None);
    let half = RESPONSE_WINDOW / 2;
    for _ in 0..half {
        assert_eq!(response.next().await?, body("x"));
    }
    let credit = Outgoing::Credit { id, parts: half };
    assert_eq!(line(&mut requests).await, Some(credit));
    // Grants the endpoint has not written yet add up into one line.
    for _ in 0..half {
        tunnel.deliver(id, body("x"));
    }
    for _ in 0..RESPONSE_WINDOW {
        assert_eq!(response.next().await?, body("x"));
    }
    let credit = Outgoing::Credit {
        id,
        parts: RESPONSE_WINDOW,
    };
    assert_eq!(line(&mut requests).await, Some(credit));
    // The last part owes nothing; a complete answer is neither credited nor aborted.
    tunnel.deliver(id, ResponsePart::End);
    assert_eq!(response.next().await?, ResponsePart::End);
    drop(response);
    assert_eq!(line(&mut requests).await, None);
    Ok(())
}

#[tokio::test]
async fn an_abort_replaces_what_its_request_is_owed() -> Result<(), TunnelError> {
    let (tunnel, mut requests) = Tunnel::new(NO_PROGRESS);
    tunnel.reattached(clawpen_protocol::VERSION);
    let mut response = tunnel.send(fetch("a")).await?;
    let id = response.id();
    assert!(matches!(
        requests.recv().await,
        Some(Outgoing::Request { .. })
    ));
    for _ in 0..RESPONSE_WINDOW {
        tunnel.deliver(id, body("x"));
    }
    for _ in 0..RESPONSE_WINDOW {
        response.next().await?;
    }
    drop(response);
    assert_eq!(line(&mut requests).await, Some(Outgoing::Abort(id)));
    assert_eq!(line(&mut requests).await, None);
    Ok(())
}

#[tokio::test]
async fn a_reattach_ends_every_waiting_answer() -> Result<(), TunnelError> {
    let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
    let mut response = tunnel.send(fetch("a")).await?;
    tunnel.reattached(clawpen_protocol::VERSION);
    assert_eq!(response.next().await, Err(TunnelError::Reattached));
    assert_eq!(tunnel.pending(), 0);
    Ok(())
}

#[test]
fn task_requests_wait_for_a_bridge_that_speaks_them() {
    let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
    assert!(!tunnel.bridge_schedules(), "before any Resume");
    tunnel.reattached(TASKS_VERSION - 1);
    assert!(
        !tunnel.bridge_schedules(),
        "a bridge of version 2 cannot read them"
    );
    tunnel.reattached(TASKS_VERSION);
    assert!(tunnel.bridge_schedules());
}

#[test]
fn a_window_grants_in_halves() {
    let mut window = Window::new(4);
    assert_eq!(window.size(), 4);
    assert_eq!(window.took(), None);
    assert_eq!(window.took(), Some(2));
    assert_eq!(window.took(), None);
    assert_eq!(window.took(), Some(2));
    // The smallest windows still grant.
    let mut one = Window::new(0);
    assert_eq!(one.size(), 1);
    assert_eq!(one.took(), Some(1));
    let mut three = Window::new(3);
    assert_eq!(three.took(), None);
    assert_eq!(three.took(), Some(2));
}

/// A bridge sending whenever it has credit and a reader taking parts at its own pace,
/// in every interleaving of a small schedule: the bridge is never more than a window
/// ahead, and never out of credit while the reader waits.
#[test]
fn a_window_bounds_the_bridge_and_never_deadlocks() {
    for size in 1..=9u32 {
        for schedule in 0..512u32 {
            let mut window = Window::new(size);
            let (mut credit, mut sent, mut taken) = (u64::from(size), 0u64, 0u64);
            let total = 40;
            let mut step = 0;
            while taken < total {
                let bridge_turn = (schedule >> (step % 9)) & 1 == 1;
                step += 1;
                let can_send = sent < credit && sent < total;
                let can_take = taken < sent;
                assert!(
                    can_send || can_take,
                    "deadlock: size {size} sent {sent} taken {taken}"
                );
                if can_send && (bridge_turn || !can_take) {
                    sent += 1;
                } else {
                    taken += 1;
                    if let Some(parts) = window.took() {
                        credit += u64::from(parts);
                    }
                }
                assert!(sent - taken <= u64::from(size), "the bridge ran ahead");
            }
        }
    }
}
