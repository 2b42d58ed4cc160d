//! Choosing a device changes nothing process-wide: a host application's panic hook stays in
//! place (a swapped hook would silence its other threads' panics) and the environment is left
//! alone (`setenv` races with every other thread). One test in its own binary, so no other test
//! shares the process while it checks.

use lopa::device::{select, BackendChoice};
use std::sync::atomic::{AtomicUsize, Ordering};

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn selecting_a_device_leaves_the_panic_hook_and_the_environment_alone() {
    std::env::remove_var("XDG_RUNTIME_DIR");
    std::panic::set_hook(Box::new(|_| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let before = HOOK_CALLS.load(Ordering::SeqCst);
    // A panic on another thread while the selection runs must still reach the host's hook.
    let other = std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let _ = std::panic::catch_unwind(|| panic!("another thread's panic"));
    });
    for choice in [BackendChoice::Auto, BackendChoice::Cpu] {
        let s = select(choice).expect("Auto and Cpu always give a device");
        assert!(!s.name.is_empty());
    }
    other.join().unwrap();
    let _ = std::panic::catch_unwind(|| panic!("after the selection"));
    let calls = HOOK_CALLS.load(Ordering::SeqCst) - before;
    // The two panics above, plus any the wgpu probe raised: each reached the hook.
    assert!(calls >= 2, "the host's panic hook saw {calls} of at least 2 panics");
    assert_eq!(std::env::var_os("XDG_RUNTIME_DIR"), None, "select set XDG_RUNTIME_DIR");
    let _ = std::panic::take_hook();
}
