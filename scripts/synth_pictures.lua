-- Log-mel spectrogram pictures of one synthetic clip per machine type, as
-- PNG files (docs/synth_<type>.png), for the README. Drawn with machrt.plot
-- (cairo).
--
--   ./machrt scripts/synth_pictures.lua [--data data/synthetic] [--out docs]
--
-- Each picture: 10 s across (313 frames, hop 512 at 16 kHz), 128 mel bands
-- up (0 to 8 kHz, low at the bottom), 70 dB of range from dark to bright
-- (viridis), with time and band axes and a dB colorbar. The clip is the
-- first normal clip of model id_00 at +6 dB SNR.

local audio = require "machrt.audio"
local synth = require "machrt.synth"
local plot = require "machrt.plot"

local cli = require "machrt.cli"

local CLI = { name = "synth_pictures", options = { data = "value", out = "value" },
              usage = "usage: machrt scripts/synth_pictures.lua [--data data/synthetic] [--out docs]\n"
                  .. "  one log-mel picture per machine type, docs/synth_<type>.png (the corpus is\n"
                  .. "  generated in --data when it holds none)\n" }
local args = cli.parse(arg, CLI)
local data, out = args.data or "data/synthetic", args.out or "docs"

local SR, HOP, RANGE_DB = 16000, 512, 70

local info = synth.ensure(data)
local mel = audio.MelSpectrogram{ sample_rate = SR, n_fft = 1024, hop_length = HOP, n_mels = 128 }
local picked = {}
for line in io.lines(info.csv) do
    -- Whatever columns follow snr_db (version 3 adds fault_severity).
    local path, label, id, cond, snr = (line .. ","):match("^%d+,([^,]+),(%a+),(%d+),(%a+),(%-?%d+),")
    if path and not picked[label] and id == "00" and cond == "normal" and snr == "6" then
        picked[label] = path
    end
end
for _, t in ipairs(synth.types()) do
    local rel = assert(picked[t], "no normal id_00 clip at 6 dB for " .. t)
    local db = audio.amplitude_to_db(mel:forward((audio.load(data .. "/" .. rel, { channel = 1 }))))
    local top = db:max()
    local bands, frames = db:size(1), db:size(2)
    local file = out .. "/synth_" .. t .. ".png"
    plot.heatmap(file, db, {
        title = string.format("%s, id_00, normal, +6 dB", t),
        xlabel = "time (s)", ylabel = "mel band", clabel = "dB",
        xrange = { 0, frames * HOP / SR }, origin = "lower",
        vmin = top - RANGE_DB, vmax = top, colormap = "viridis",
        width = 640, height = 320,
    })
    print(string.format("%s: %s -> %s (%d bands x %d frames)", t, rel, file, bands, frames))
end
