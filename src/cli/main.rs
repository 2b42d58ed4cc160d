//! The `lopa` command line: one file per command, each with its flags (`Args`) and `run`.

mod args;
mod bench_train;
mod embed;
mod eval;
mod export_hf;
mod export_web;
mod generate;
mod info;
#[cfg(feature = "server")]
mod personalize;
mod predict;
#[cfg(feature = "server")]
mod serve;
mod soft_prompt;
mod train;
mod zero_shot;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "lopa", version, about = "Low-Rank Prompt Adaptation: private soft prompts for one frozen model")]
// A later flag overrides an earlier one, so scripts/run.sh "$@" can change its defaults.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: boxing the larger arguments would save nothing. (Without the server
// feature the variants' sizes differ more, and clippy says so.)
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print a model's configuration.
    Info(info::Args),
    /// Complete a prompt with the frozen model (no soft prompt).
    Generate(generate::Args),
    /// Print the sentence embeddings of texts (from an encoder folder or the browser's files).
    Embed(embed::Args),
    /// Train a soft-prompt generator (LoPA, a variant, or a baseline) against the frozen model.
    Train(train::Args),
    /// Measure training throughput (samples/s) with random weights of the default models' shapes.
    BenchTrain(bench_train::Args),
    /// Serve the frozen model over HTTP (OpenAI-style /v1/completions with a `soft_prompt` field),
    /// in this process or as the gateway in front of vLLM (`--upstream`).
    #[cfg(feature = "server")]
    Serve(serve::Args),
    /// Train a copy of an adapter on your own labelled examples against a `lopa serve` endpoint,
    /// which sees soft prompts, prompts and targets, never the adapter.
    #[cfg(feature = "server")]
    Personalize(personalize::Args),
    /// Write the frozen model as a Hugging Face folder (config.json, model.safetensors in f32,
    /// tokenizer.json): what vLLM loads to serve exactly the model `lopa serve` runs.
    ExportHf(export_hf::Args),
    /// Dev score of the frozen model alone (no soft prompt): the zero-shot baseline.
    ZeroShot(zero_shot::Args),
    /// Evaluate a saved adapter on a labelled file.
    Eval(eval::Args),
    /// Write the browser's weight files into one folder: encoder.safetensors (the encoder as a
    /// single-file bundle), tokenizer.json, adapters/NAME.safetensors for each adapter, and
    /// adapters.json listing them. Matrices as int8 by default (`--dtype`).
    ExportWeb(export_web::Args),
    /// Print the soft prompts of inputs (JSON), computed from the browser files as the browser
    /// package does: the native reference for its parity test.
    SoftPrompt(soft_prompt::Args),
    /// Classify one input with a saved adapter.
    Predict(predict::Args),
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> lopa::Result<()> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Train(a) => train::run(a, matches.subcommand_matches("train").expect("the train subcommand")),
        Command::BenchTrain(a) => bench_train::run(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => serve::run(a),
        #[cfg(feature = "server")]
        Command::Personalize(a) => personalize::run(a),
        Command::ExportHf(a) => export_hf::run(a),
        Command::ZeroShot(a) => zero_shot::run(a),
        Command::Eval(a) => eval::run(a),
        Command::ExportWeb(a) => export_web::run(a),
        Command::SoftPrompt(a) => soft_prompt::run(a),
        Command::Predict(a) => predict::run(a),
    }
}

fn main() -> ExitCode {
    // Process-wide settings belong here, before any thread exists.
    if let Some(dir) = lopa::device::runtime_dir_if_missing() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
    let args = match train::expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lopa: {e}");
            return ExitCode::FAILURE;
        }
    };
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lopa: {e}");
            ExitCode::FAILURE
        }
    }
}
