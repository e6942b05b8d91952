//! The access rules, with a clock passed in, and the gate with a fake sink.

use super::*;
use crate::fake_sink::{lock, FakeSink};

fn rules(users: &[&str], chats: &[&str], roles: &[&str]) -> Rules {
    let list = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
    Rules {
        users: list(users),
        chats: list(chats),
        roles: list(roles),
    }
}

/// A private, addressed message from `user` (in their own chat).
fn dm(user: &str) -> Sender<'_> {
    Sender {
        user,
        chat: user,
        roles: &[],
        private: true,
        addressed: true,
    }
}

fn in_group<'a>(user: &'a str, chat: &'a str, addressed: bool) -> Sender<'a> {
    Sender {
        user,
        chat,
        roles: &[],
        private: false,
        addressed,
    }
}

#[test]
fn allowlisted_users_and_chats_pass_and_strangers_are_refused_once_an_hour() {
    let t0 = Instant::now();
    let mut access = Access::new(&rules(&["1"], &["-100"], &[]));
    assert_eq!(access.restore(None, "1234-5678".into()), None, "no pairing");
    assert_eq!(access.check(&dm("1"), "hi", t0), Verdict::Allowed);
    assert_eq!(
        access.check(&in_group("9", "-100", false), "hi", t0),
        Verdict::Allowed
    );
    assert_eq!(access.check(&dm("9"), "hi", t0), Verdict::Refuse);
    assert_eq!(access.check(&dm("9"), "hi?", t0), Verdict::Ignore);
    let later = t0 + REFUSE_EVERY;
    assert_eq!(access.check(&dm("9"), "hello", later), Verdict::Refuse);
    // A stranger's chatter in a group that is not allowed is dropped without a word.
    assert_eq!(
        access.check(&in_group("8", "-5", false), "hi", t0),
        Verdict::Ignore
    );
    assert_eq!(
        access.check(&in_group("8", "-5", true), "@bot hi", t0),
        Verdict::Refuse
    );
}

#[test]
fn holders_of_an_allowed_role_pass() {
    let t0 = Instant::now();
    let mut access = Access::new(&rules(&[], &[], &["admins"]));
    assert_eq!(
        access.restore(None, "1234-5678".into()),
        None,
        "roles close pairing"
    );
    let roles = ["members".to_string(), "admins".to_string()];
    let sender = Sender {
        roles: &roles,
        ..in_group("42", "guild-channel", true)
    };
    assert_eq!(access.check(&sender, "hi", t0), Verdict::Allowed);
    let sender = Sender {
        roles: &roles[..1],
        ..in_group("43", "guild-channel", true)
    };
    assert_eq!(access.check(&sender, "hi", t0), Verdict::Refuse);
}

#[test]
fn the_first_sender_of_the_code_in_private_becomes_the_owner() {
    let t0 = Instant::now();
    let mut access = Access::new(&Rules::default());
    assert_eq!(access.restore(None, "1234-5678".into()), Some("1234-5678"));
    assert_eq!(
        access.check(&in_group("5", "-1", true), "1234-5678", t0),
        Verdict::Refuse,
        "a code shown in a group does not count"
    );
    assert_eq!(access.check(&dm("6"), "1234-0000", t0), Verdict::Refuse);
    assert_eq!(
        access.check(&dm("7"), "/start 1234-5678", t0),
        Verdict::Paired
    );
    assert_eq!(access.pairing_code(), None, "the code is single-use");
    assert_eq!(access.check(&dm("7"), "hi", t0), Verdict::Allowed);
    assert_eq!(access.check(&dm("8"), " 1234-5678 ", t0), Verdict::Refuse);
}

#[test]
fn one_user_guessing_codes_is_cut_off_before_the_right_one() {
    let t0 = Instant::now();
    let mut access = Access::new(&Rules::default());
    access.restore(None, "1234-5678".into());
    for n in 0..200 {
        let guess = format!("0000-{n:04}");
        assert_ne!(access.check(&dm("6"), &guess, t0), Verdict::Paired);
    }
    assert_ne!(
        access.check(&dm("6"), "1234-5678", t0),
        Verdict::Paired,
        "the 201st guess was compared"
    );
    // Someone else, with the code, still pairs; the guesser's hour passes in vain.
    assert_eq!(access.check(&dm("7"), "1234-5678", t0), Verdict::Paired);
}

#[test]
fn many_users_guessing_withdraw_the_code() {
    let t0 = Instant::now();
    let mut access = Access::new(&Rules::default());
    access.restore(None, "1234-5678".into());
    for user in 0..GUESSES_PER_CODE {
        let user = format!("u{user}");
        assert_eq!(access.check(&dm(&user), "9999-9999", t0), Verdict::Refuse);
    }
    assert_eq!(access.pairing_code(), None, "the code was not withdrawn");
    assert_ne!(access.check(&dm("7"), "1234-5678", t0), Verdict::Paired);
}

#[test]
fn the_code_expires() {
    let mut access = Access::new(&Rules::default());
    access.restore(None, "1234-5678".into());
    let later = Instant::now() + PAIRING_VALID;
    assert_ne!(access.check(&dm("7"), "1234-5678", later), Verdict::Paired);
    assert_eq!(access.pairing_code(), None);
}

#[test]
fn chatter_of_another_length_is_no_guess() {
    let t0 = Instant::now();
    let mut access = Access::new(&Rules::default());
    access.restore(None, "1234-5678".into());
    for _ in 0..(2 * GUESSES_PER_USER) {
        access.check(&dm("6"), "hello, who are you?", t0);
    }
    assert_eq!(access.check(&dm("6"), "1234-5678", t0), Verdict::Paired);
}

#[test]
fn a_stored_owner_closes_pairing() {
    let mut access = Access::new(&Rules::default());
    assert_eq!(access.restore(Some("3".into()), "1111-2222".into()), None);
    let t0 = Instant::now();
    assert_eq!(access.check(&dm("3"), "hi", t0), Verdict::Allowed);
}

#[test]
fn the_refusal_memory_is_bounded() {
    let t0 = Instant::now();
    let mut access = Access::new(&rules(&["1"], &[], &[]));
    for user in 0..(REFUSED_KEPT + 10) {
        let user = (user + 10).to_string();
        access.check(&dm(&user), "hi", t0);
    }
    assert!(access.refused.len() <= REFUSED_KEPT);
}

#[test]
fn codes_have_eight_digits() {
    assert_eq!(new_code(0), "0000-0000");
    assert_eq!(new_code(u64::MAX), "0955-1615");
    assert_eq!(new_code(12_345_678), "1234-5678");
}

#[tokio::test]
async fn the_owner_is_kept_through_the_sink_across_restarts() {
    let sink = FakeSink::default();
    let gate = Gate::new("discord", &Rules::default());
    gate.restore(&sink, "Discord", "the bot in a direct message")
        .await;
    let code = gate.pairing_code().unwrap_or_default();
    assert_eq!(code.len(), 9, "{code:?}");
    assert_eq!(
        gate.admit(&sink, &dm("77"), "hello").await,
        Admission::Answer(UNPAIRED)
    );
    assert_eq!(
        gate.admit(&sink, &dm("78"), &code).await,
        Admission::Answer(PAIRED)
    );
    assert_eq!(
        lock(&sink.values).get("discord.owner").map(String::as_str),
        Some("78")
    );
    // The next run finds the owner and opens no pairing; strangers hear the plain refusal.
    let again = Gate::new("discord", &Rules::default());
    again.restore(&sink, "Discord", "the bot").await;
    assert_eq!(again.pairing_code(), None);
    assert_eq!(
        again.admit(&sink, &dm("78"), "hi").await,
        Admission::Allowed
    );
    assert_eq!(
        again.admit(&sink, &dm("79"), "hi").await,
        Admission::Answer(REFUSAL)
    );
    assert_eq!(again.admit(&sink, &dm("79"), "hi?").await, Admission::Drop);
}
