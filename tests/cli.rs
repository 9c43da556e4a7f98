//! The `dlrt` binary end to end.

use std::process::Command;

fn dlrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dlrt")).args(args).output().expect("run dlrt")
}

#[test]
fn matrix_finds_the_target_rank_with_abc_psi() {
    let out = dlrt(&["matrix", "--method", "abc_psi", "--target-rank", "7", "--rank", "3", "--steps", "25"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 25);
    let (first, last) = (&rows[0], &rows[24]);
    assert_eq!(last[2], "7", "final rank: {text}");
    let loss = |row: &Vec<&str>| row[1].parse::<f64>().unwrap();
    assert!(loss(last) < 1e-6 * loss(first), "{text}");
    // abc-PSI: 2 passes, 1 QR, 1 SVD per step.
    assert_eq!(&last[3..], &["50", "25", "25"]);
}

#[test]
fn bad_arguments_fail_with_a_message_naming_the_value() {
    let out = dlrt(&["matrix", "--tau", "1.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tol") && err.contains("1.5"), "{err}");
    let out = dlrt(&["matrix", "--method", "svd_magic"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("abc_psi"), "lists the valid methods");
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_without_the_feature_is_a_clear_error() {
    let out = dlrt(&["bench", "--device", "cuda", "--steps", "1", "--warmup", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn bench_prints_both_tables_and_attributes_host_time_to_the_right_methods() {
    // Gaussian batches where MNIST is absent: the table is the same shape either way.
    let args = ["bench", "--warmup", "2", "--steps", "3", "--methods", "abc_psi_one_pass,bc_psi,lora,dense"];
    let out = dlrt(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (main, parts) = text.split_once("Where a step's time goes").expect("the breakdown table");
    // | method | forward | backward | update | host QR | host SVD |
    let row = |method: &str| -> Vec<f64> {
        let line = parts
            .lines()
            .find(|l| l.starts_with(&format!("| {method} |")))
            .unwrap_or_else(|| panic!("{text}"));
        line.split('|').skip(2).filter(|c| !c.trim().is_empty()).map(|c| c.trim().parse().unwrap()).collect()
    };
    for method in ["abc_psi_one_pass", "bc_psi", "lora", "dense"] {
        assert!(main.contains(&format!("| {method} |")), "{text}");
        let r = row(method);
        assert_eq!(r.len(), 5, "{text}");
        assert!(r[..3].iter().all(|&t| t > 0.0), "forward, backward and update take time: {text}");
    }
    // Host time goes where the decompositions are: abc-PSI has both, bc-PSI QRs only, LoRA
    // and dense training none.
    let (abc, bc, lora, dense) = (row("abc_psi_one_pass"), row("bc_psi"), row("lora"), row("dense"));
    assert!(abc[3] > 0.0 && abc[4] > 0.0, "{text}");
    assert!(bc[3] > 0.0 && bc[4] == 0.0, "{text}");
    assert!(lora[3..] == [0.0, 0.0] && dense[3..] == [0.0, 0.0], "{text}");
}

#[test]
fn bench_vit_prints_a_row_per_method_and_rejects_tiny_images() {
    let args = ["bench-vit", "--image", "14", "--batch", "2", "--steps", "1", "--warmup", "0"];
    let out = dlrt(&[&args[..], &["--methods", "abc_psi,abc_psi_one_pass,lora"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (main, parts) = text.split_once("Where a step's time goes").expect("the breakdown table");
    for method in ["abc_psi", "abc_psi_one_pass", "lora"] {
        assert!(main.contains(&format!("| {method} |")), "{text}");
        assert!(parts.contains(&format!("| {method} |")), "{text}");
    }
    let lora = parts.lines().find(|l| l.starts_with("| lora |")).unwrap();
    assert!(lora.ends_with("| 0 | 0 |"), "LoRA makes no host decompositions: {text}");
    let out = dlrt(&["bench-vit", "--image", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("patch size 14"));
}
