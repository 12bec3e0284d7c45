-- machrt.anomaly: the pieces of experiments/anomaly.lua (DCASE 2020 Task 2's
-- question: is this machine failing?).
--
--   data        which clips train (normal only) and validate; machines
--   autoencoder the DCASE 2020 baseline: one autoencoder per machine type
--   embedding   a network that tells machines apart; distances to their normal embeddings
--   frames      distances of a clip's log-mel frames to its machine's normal frames
--   mixture     a mixture of diagonal Gaussians (EM) of a machine's normal frames
--   decide      thresholds at a target false-positive rate, AUC / pAUC, val_scores.csv, metrics.json
--   detector    the trained detector for inference: run folder, scorer folder, files, streams
--   interpret   ROC curves, score histograms, pictures of the clips nearest the threshold
return {
    data = require "machrt.anomaly.data",
    autoencoder = require "machrt.anomaly.autoencoder",
    embedding = require "machrt.anomaly.embedding",
    frames = require "machrt.anomaly.frames",
    mixture = require "machrt.anomaly.mixture",
    decide = require "machrt.anomaly.decide",
    detector = require "machrt.anomaly.detector",
    interpret = require "machrt.anomaly.interpret",
}
