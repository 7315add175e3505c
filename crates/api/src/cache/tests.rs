use super::*;
use meta169_http::signing::SignatureMemo;
use meta169_tree::{example_instance, RenderOptions};

fn loaded(uuid: &str) -> Arc<LoadedInstance> {
    let mut instance = example_instance();
    instance.uuid = uuid.into();
    let options = Arc::new(RenderOptions::default());
    Arc::new(LoadedInstance::new(instance, options, String::new(), 1))
}

fn limits(max_instances: usize) -> CacheLimits {
    CacheLimits {
        ttl: Duration::from_secs(60),
        max_instances,
        max_bytes: usize::MAX,
    }
}

#[test]
fn the_least_recently_used_go_first() {
    let caches = Caches::new(limits(32));
    for i in 0..32 {
        caches.put_instance(loaded(&format!("i{i}")), caches.generation());
    }
    std::thread::sleep(Duration::from_millis(5));
    // The first half is used again; the second half is not.
    for i in 0..16 {
        assert!(caches.instance(&format!("i{i}"), Instant::now()).is_some());
    }
    std::thread::sleep(Duration::from_millis(5));
    let evicted = caches.put_instance(loaded("new"), caches.generation());
    assert!(evicted >= 1);
    assert!(caches.instances() <= 32);
    for i in 0..16 {
        assert!(
            caches.instance(&format!("i{i}"), Instant::now()).is_some(),
            "i{i} evicted"
        );
    }
    assert!(caches.instance("new", Instant::now()).is_some());
}

#[test]
fn an_entry_is_fresh_for_its_ttl_then_expired() {
    let caches = Caches::new(limits(10));
    caches.put_instance(loaded("a"), caches.generation());
    let now = Instant::now();
    assert!(matches!(caches.instance("a", now), Some(Cached::Fresh(_))));
    let later = now + Duration::from_secs(61);
    assert!(matches!(
        caches.instance("a", later),
        Some(Cached::Expired(_))
    ));
    // A TTL past the clock's range never runs out.
    let caches = Caches::new(CacheLimits {
        ttl: Duration::MAX,
        ..limits(10)
    });
    caches.put_instance(loaded("a"), caches.generation());
    let much_later = now + Duration::from_secs(100 * 365 * 86_400);
    assert!(matches!(
        caches.instance("a", much_later),
        Some(Cached::Fresh(_))
    ));
}

#[test]
fn bytes_are_bounded_too() {
    let one = loaded("x").weight();
    let caches = Caches::new(CacheLimits {
        max_bytes: 10 * one,
        ..limits(1000)
    });
    for i in 0..100 {
        caches.put_instance(loaded(&format!("i{i}")), caches.generation());
        assert!(caches.bytes() <= 10 * one);
    }
    assert!(caches.instances() <= 10);
    caches.clear();
    assert_eq!((caches.instances(), caches.bytes()), (0, 0));
}

#[test]
fn a_load_that_raced_with_a_change_is_not_kept() {
    let caches = Caches::new(limits(10));
    let before = caches.generation();
    caches.invalidate("a");
    caches.put_instance(loaded("a"), before);
    assert!(caches.instance("a", Instant::now()).is_none());
    caches.put_instance(loaded("a"), caches.generation());
    assert!(caches.instance("a", Instant::now()).is_some());
}

#[test]
fn a_record_change_drops_its_addresses_a_password_change_does_not() {
    let caches = Caches::new(limits(10));
    let key = AddressKey::AnyNetworkIp("10.0.0.5".parse().unwrap());
    let other = AddressKey::AnyNetworkIp("10.0.0.6".parse().unwrap());
    caches.put_address(key.clone(), "a".into(), caches.generation());
    caches.put_address(other.clone(), "b".into(), caches.generation());
    caches.put_instance(loaded("a"), caches.generation());
    caches.forget_instance("a");
    assert!(caches.instance("a", Instant::now()).is_none());
    assert!(caches.address(&key, Instant::now()).is_some());
    caches.invalidate("a");
    assert!(caches.address(&key, Instant::now()).is_none());
    assert!(caches.address(&other, Instant::now()).is_some());
}

#[test]
fn an_instance_checks_its_own_signature() {
    let instance = loaded("6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02");
    let memo = SignatureMemo::new(b"secret");
    let right = meta169_http::signing::sign_instance_id(b"secret", &instance.uuid);
    let other = meta169_http::signing::sign_instance_id(b"other secret", &instance.uuid);
    // Twice each: computed on the first check, kept for the second.
    for _ in 0..2 {
        assert!(instance.signature_matches(&memo, right.as_bytes()));
        assert!(!instance.signature_matches(&memo, other.as_bytes()));
        assert!(!instance.signature_matches(&memo, &right.as_bytes()[..63]));
        assert!(!instance.signature_matches(&memo, b""));
    }
    assert!(memo.matches(&instance.uuid, right.as_bytes()));
}

#[test]
fn one_request_at_a_time_may_reload_an_expired_entry() {
    let caches = Caches::new(limits(10));
    caches.put_instance(loaded("a"), caches.generation());
    let later = Instant::now() + Duration::from_secs(61);
    let Some(Cached::Expired(stale)) = caches.instance("a", later) else {
        panic!("the entry should have expired");
    };
    let claim = stale.claim_refresh().expect("the first request reloads");
    let Some(Cached::Expired(again)) = caches.instance("a", later) else {
        panic!("the entry should still be there, expired");
    };
    assert!(again.claim_refresh().is_none(), "a second reload at once");
    // A reload that fails or is abandoned leaves it to the next request.
    drop(claim);
    assert!(again.claim_refresh().is_some());
}

#[test]
fn one_request_at_a_time_may_look_up_an_expired_address() {
    let caches = Caches::new(limits(10));
    let key = AddressKey::AnyNetworkIp("10.0.0.5".parse().unwrap());
    assert!(
        caches.claim_address_refresh(&key).is_none(),
        "nothing cached"
    );
    caches.put_address(key.clone(), "a".into(), caches.generation());
    let claim = caches
        .claim_address_refresh(&key)
        .expect("the first request");
    assert!(caches.claim_address_refresh(&key).is_none());
    drop(claim);
    assert!(caches.claim_address_refresh(&key).is_some());
}

#[test]
fn an_address_found_nowhere_is_forgotten() {
    let caches = Caches::new(limits(10));
    let key = AddressKey::AnyNetworkIp("10.0.0.5".parse().unwrap());
    let other = AddressKey::AnyNetworkIp("10.0.0.6".parse().unwrap());
    caches.put_address(key.clone(), "a".into(), caches.generation());
    caches.put_address(other.clone(), "b".into(), caches.generation());
    let generation = caches.generation();
    caches.forget_address(&key);
    assert!(caches.address(&key, Instant::now()).is_none());
    assert!(caches.address(&other, Instant::now()).is_some());
    // A lookup that started before is not cached over it.
    caches.put_address(key.clone(), "a".into(), generation);
    assert!(caches.address(&key, Instant::now()).is_none());
}
