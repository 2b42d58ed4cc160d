//! `prompt_embeds` as real PyTorch writes it: files made by `torch.save` (PyTorch 2.11 on the GPU
//! machine, tests/fixtures/torch/) decode to the values torch recorded, including a slice that
//! shares a larger storage (storage offset) and a non-contiguous (transposed) view.

mod common;

use lopa::model::weights::torch::load_tensor;

fn load(name: &str) -> (Vec<usize>, Vec<f32>) {
    load_tensor(&std::fs::read(common::fixture(&format!("torch/prompt_embeds_{name}.pt"))).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn real_torch_save_files_decode_to_torch_values() {
    let expected = common::json("torch/expected.json");
    let (_, base) = load("f32");
    for name in ["f32", "f16", "bf16", "f32_slice", "f32_transposed"] {
        let want = &expected[name];
        let (shape, values) = load(name);
        let want_shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, want_shape, "{name} shape");
        assert_eq!(values[..8], common::floats(&want["first"])[..], "{name} first values");
        assert_eq!(values[values.len() - 4..], common::floats(&want["last"])[..], "{name} last values");
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        assert!((sum - want["sum"].as_f64().unwrap()).abs() < 1e-6 * want["abs_sum"].as_f64().unwrap(), "{name} sum {sum}");
        // Cross-checks that do not rely on the recorded values.
        match name {
            "f16" => assert!(values.iter().zip(&base).all(|(h, f)| *h == half::f16::from_f32(*f).to_f32())),
            "bf16" => assert!(values.iter().zip(&base).all(|(h, f)| *h == half::bf16::from_f32(*f).to_f32())),
            "f32_slice" => assert_eq!(values, base[2 * 576..5 * 576]),
            "f32_transposed" => assert_eq!(values, base),
            _ => {}
        }
    }
}

#[test]
fn views_larger_than_their_storage_are_refused() {
    // The real f32 file with its pickle patched in place (no CRC check; same length): size
    // (10, 576) stride (576, 1) → size (20, 576) stride (0, 1), a broadcast view of 11,520
    // elements over a 5,760-element storage. Refused before any allocation of that size.
    let mut b = std::fs::read(common::fixture("torch/prompt_embeds_f32.pt")).unwrap();
    let from = b"K\nM@\x02\x86q\x06M@\x02K\x01\x86";
    let to = b"K\x14M@\x02\x86q\x06M\x00\x00K\x01\x86";
    let at = b.windows(from.len()).position(|w| w == from).expect("size/stride record");
    b[at..at + from.len()].copy_from_slice(to);
    assert_eq!(load_tensor(&b).unwrap_err().to_string(), "prompt_embeds: the tensor has 11520 elements, more than its storage's 5760");
    // The same with stride (0, 1) and the original size is a valid broadcast view: every row is row 0.
    let mut b = std::fs::read(common::fixture("torch/prompt_embeds_f32.pt")).unwrap();
    let to = b"K\nM@\x02\x86q\x06M\x00\x00K\x01\x86";
    b[at..at + from.len()].copy_from_slice(to);
    let (shape, values) = load_tensor(&b).unwrap();
    assert_eq!(shape, vec![10, 576]);
    assert!(values.chunks(576).all(|row| row == &values[..576]));
}
