//! `prompt_embeds` as real PyTorch writes it: files made by `torch.save` (PyTorch 2.11 on the GPU
//! machine, tests/fixtures/torch/) decode to the values torch recorded, including a slice that
//! shares a larger storage (storage offset) and a non-contiguous (transposed) view.

mod common;

use lopa::server::torch_tensor::load_tensor;

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
