//! Parity of the Rust front end and CAM++ with the PyTorch reference
//! (tests/fixtures/reference/campplus). Needs the real weights
//! (`processor/scripts/fetch-model.sh`); a missing model fails the test.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use timbre::audio::{AudioLimits, decode_wav};
use timbre::domain::policy::cosine;
use timbre::model::aasist::{Aasist, prepare_input};
use timbre::model::silero::SileroVad;
use timbre::model::{Matmul, SpeakerModel, default_model_dir};
use timbre::ports::SpeechDetector;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load_model() -> SpeakerModel {
    SpeakerModel::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn reference_files() -> Vec<PathBuf> {
    let list = std::fs::read_to_string(fixtures().join("reference/campplus/files.txt")).unwrap();
    list.lines().map(|l| fixtures().join(l)).collect()
}

fn samples(path: &Path) -> Vec<f32> {
    decode_wav(&std::fs::read(path).unwrap(), &AudioLimits::default())
        .unwrap()
        .samples
}

/// Log-energy under which the float32 reference is limited by its own FFT
/// rounding: in those bins the energy is ~1e-7 of the frame's and the
/// reference carries about 1e-3 of noise, so the bound there is 2e-3.
const REFERENCE_NOISE_FLOOR: f32 = -14.0;

#[test]
fn fbank_matches_torchaudio_kaldi() {
    let model = load_model();
    let files = reference_files();
    for (i, file) in files.iter().take(3).enumerate() {
        let reference =
            Tensor::read_npy(fixtures().join(format!("reference/campplus/fbank_{i}.npy")))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        let ours = model.features(&samples(file));
        assert_eq!(
            ours.len(),
            reference.len(),
            "frame count of {}",
            file.display()
        );
        let (mut max_err, mut max_err_above_floor, mut sum_err) = (0f32, 0f32, 0f64);
        for (a, b) in ours.iter().zip(&reference) {
            let e = (a - b).abs();
            max_err = max_err.max(e);
            if *b > REFERENCE_NOISE_FLOOR {
                max_err_above_floor = max_err_above_floor.max(e);
            }
            sum_err += f64::from(e);
        }
        let mae = sum_err / ours.len() as f64;
        eprintln!(
            "fbank {i}: mean abs err {mae:.2e}, max {max_err:.2e}, max above log-energy {REFERENCE_NOISE_FLOOR}: {max_err_above_floor:.2e}"
        );
        assert!(mae < 1e-5, "fbank {i}: mean abs err {mae}");
        assert!(
            max_err_above_floor <= 1e-3,
            "fbank {i}: {max_err_above_floor}"
        );
        assert!(max_err <= 2e-3, "fbank {i}: {max_err}");
    }
}

/// Both kernels this CPU runs: f32 everywhere, bfloat16 where the CPU has
/// it (what `auto`, the default, picks).
#[test]
fn embeddings_match_pytorch_reference() {
    let mut model = load_model();
    let reference = Tensor::read_npy(fixtures().join("reference/campplus/embeddings.npy")).unwrap();
    let files = reference_files();
    assert_eq!(reference.dims(), &[files.len(), 192]);
    let mut kernels = vec![Matmul::F32];
    kernels.extend(Matmul::Auto.resolve().ok().filter(|k| *k != Matmul::F32));
    for kernel in kernels {
        model.set_matmul(kernel).unwrap();
        assert_eq!(model.matmul(), kernel);
        let mut worst = 1f32;
        for (i, file) in files.iter().enumerate() {
            let want = reference.get(i).unwrap().to_vec1::<f32>().unwrap();
            let got = model.embed(&samples(file)).unwrap();
            let cos = cosine(&got, &want);
            worst = worst.min(cos);
            assert!(cos >= 0.999, "{kernel:?} {}: cosine {cos}", file.display());
        }
        eprintln!(
            "{kernel:?}: worst cosine over {} files: {worst:.6}",
            files.len()
        );
    }
}

/// AASIST on candle against the official PyTorch model
/// (tests/fixtures/reference/aasist, `processor/scripts/aasist-reference.sh`):
/// same 160 features before the classifier and same logits, on real speech
/// and on synthetic speech.
#[test]
fn aasist_matches_pytorch_reference() {
    let model = Aasist::load_from_dir(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let dir = fixtures().join("reference/aasist");
    let files: Vec<String> = std::fs::read_to_string(dir.join("files.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let logits = Tensor::read_npy(dir.join("logits.npy")).unwrap();
    let hidden = Tensor::read_npy(dir.join("hidden.npy")).unwrap();
    assert_eq!(logits.dims(), &[files.len(), 2]);
    let (mut worst_logit, mut worst_cosine) = (0f32, 1f32);
    for (i, file) in files.iter().enumerate() {
        let input = prepare_input(&samples(&fixtures().join(file))).unwrap();
        let got = model.forward(&input).unwrap();
        let want = logits.get(i).unwrap().to_vec1::<f32>().unwrap();
        let want_hidden = hidden.get(i).unwrap().to_vec1::<f32>().unwrap();
        let err = (got.logits[0] - want[0])
            .abs()
            .max((got.logits[1] - want[1]).abs());
        let cos = cosine(&got.hidden, &want_hidden);
        worst_logit = worst_logit.max(err);
        worst_cosine = worst_cosine.min(cos);
        assert!(err < 0.01, "{file}: logits {:?} vs {want:?}", got.logits);
        assert!(cos > 0.9999, "{file}: hidden cosine {cos}");
    }
    eprintln!(
        "aasist over {} files: worst logit error {worst_logit:.2e}, worst hidden cosine {worst_cosine:.7}",
        files.len()
    );
}

/// Silero VAD on candle against onnxruntime running the published ONNX
/// file (tests/fixtures/reference/silero, `processor/scripts/silero-reference.sh`):
/// the same speech probability for every 32 ms chunk, at 16 kHz
/// (LibriSpeech) and at 8 kHz (FSDD), each at its own rate.
#[test]
fn silero_vad_matches_onnxruntime() {
    let vad = SileroVad::load_from_dir(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let dir = fixtures().join("reference/silero");
    let files: Vec<String> = std::fs::read_to_string(dir.join("files.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut worst = 0f32;
    let mut rates = std::collections::BTreeSet::new();
    for (i, file) in files.iter().enumerate() {
        let mut reader = hound::WavReader::open(fixtures().join(file)).unwrap();
        let rate = reader.spec().sample_rate;
        rates.insert(rate);
        let samples: Vec<f32> = reader
            .samples::<i16>()
            .map(|s| f32::from(s.unwrap()) / 32768.0)
            .collect();
        let want = Tensor::read_npy(dir.join(format!("probs_{i}.npy")))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = vad.probabilities(&samples, rate).unwrap();
        assert_eq!(got.len(), want.len(), "{file}: chunks");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            worst = worst.max((g - w).abs());
            assert!((g - w).abs() < 1e-5, "{file} chunk {k}: {g} vs {w}");
        }
    }
    assert_eq!(rates.into_iter().collect::<Vec<_>>(), vec![8_000, 16_000]);
    eprintln!(
        "silero over {} files: worst probability error {worst:.2e}",
        files.len()
    );
}

/// What the pipeline measures of 8 kHz audio (decoded to 16 kHz, brought
/// back to 8 kHz for the 8 kHz network) is what the network measures of the
/// original, within two chunks.
#[test]
fn telephone_audio_keeps_its_net_speech_through_the_decoder() {
    let vad = SileroVad::load_from_dir(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let manifest = std::fs::read_to_string(fixtures().join("fsdd/manifest.tsv")).unwrap();
    let mut compared = 0;
    let files = manifest
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .filter(|f| f.ends_with(".wav"));
    for name in files.take(12) {
        let file = fixtures().join("fsdd").join(name);
        let bytes = std::fs::read(&file).unwrap();
        let mut reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, 8_000);
        let native: Vec<f32> = reader
            .samples::<i16>()
            .map(|s| f32::from(s.unwrap()) / 32768.0)
            .collect();
        let Ok(decoded) = decode_wav(&bytes, &AudioLimits::default()) else {
            continue; // too short for the engine
        };
        let direct = vad.speech_millis(&native, 8_000).unwrap();
        let piped = SpeechDetector::speech_millis(&vad, &decoded.samples, 8_000).unwrap();
        assert!(
            direct.abs_diff(piped) <= 64,
            "{}: {direct} vs {piped} ms",
            file.display()
        );
        compared += 1;
    }
    assert!(compared >= 8, "{compared} files compared");
}
