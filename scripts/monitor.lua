-- Scores a live stream with a trained anomaly detector: reads audio from
-- standard input (a WAV stream, or raw PCM), scores a sliding window and
-- prints one line per window as soon as it is scored (CLI.usage below is the
-- full help, printed by --help).

local mt = require "machrt"
local audio = require "machrt.audio"
local pipeline = require "machrt.pipeline"
local detector = require "machrt.anomaly.detector"
local cli = require "machrt.cli"

local CLI = {
    name = "monitor",
    usage = [[
usage: machrt scripts/monitor.lua (--run DIR | --scorer DIR) - [--machine TYPE/id_NN]
       [--format wav|s16le|f32le --rate R --channels N] [--window S] [--hop S] [--device auto|cpu|cuda]

Scores a live stream with a trained anomaly detector: reads audio from
standard input (a WAV stream, or raw PCM), scores a sliding window and
prints one line per window as soon as it is scored.

  arecord -f S16_LE -r 16000 -c 1 | machrt scripts/monitor.lua --run runs/anomaly_detection/fold4 - --machine fan/id_00
  cat clip.wav | machrt scripts/monitor.lua --scorer DIR/scorer - --window 5 --hop 1
  ... | machrt scripts/monitor.lua --run DIR - --format s16le --rate 16000 --channels 2

Options:
  --run DIR | --scorer DIR   an anomaly run folder or its scorer
  -                          read standard input (the only source)
  --machine M                the machine heard (TYPE/id_NN); without it the
                             embedding detector names the machine per window
  --format F                 wav (default: a WAV header is read from the stream),
                             s16le or f32le (raw PCM, interleaved channels)
  --rate R, --channels N     raw PCM's sample rate and channel count
  --window S, --hop S        window length and step in seconds (5 and 1)
  --device D                 auto (default), cpu or cuda

Output (CSV, one line per window, flushed at once): the window's start in
seconds, the machine, the anomaly score, the machine's threshold and the
decision. The channel is the detector's audio.channel; other rates are
resampled to its sample rate. The thresholds were chosen on whole clips
(prediction.inference_chunk_seconds): windows of another length score on
a somewhat different scale.
]],
    positional = true,
    options = { run = "value", scorer = "value", machine = "value", format = "value", rate = "value",
                channels = "value", window = "value", hop = "value", device = "value" },
}
local function usage(msg) cli.fail(CLI, msg) end

local opts = cli.parse(arg, CLI)
opts.format, opts.window, opts.hop = opts.format or "wav", opts.window or "5", opts.hop or "1"
for _, p in ipairs(opts.positional) do
    if p ~= "-" then usage("cannot read argument '" .. p .. "' (the stream comes from standard input: -)") end
end
local stdin_given = #opts.positional > 0
if not opts.run == not opts.scorer then usage("give one of --run or --scorer") end
if not stdin_given then usage("give - to read the stream from standard input") end
local window, hop = tonumber(opts.window), tonumber(opts.hop)
if not window or window <= 0 then usage("--window needs a positive number of seconds") end
if not hop or hop <= 0 then usage("--hop needs a positive number of seconds") end

local ok, device = pcall(pipeline.resolve_device, opts.device or "auto", "--device")
if not ok then usage(device) end
local det = opts.run and detector.load_run(opts.run, { device = device })
    or detector.load_scorer(opts.scorer, { device = device })
if opts.machine and not det.thresholds[opts.machine] then
    usage(string.format("--machine %s is not one this detector knows (%s)", opts.machine, table.concat(det.machines, ", ")))
end
if det.method == "autoencoder" and not opts.machine then
    usage("the autoencoder detector needs the machine it hears: give --machine TYPE/id_NN (" ..
          table.concat(det.machines, ", ") .. ")")
end
local sample_rate, channel = det.cfg.audio.sample_rate, det.cfg.audio.channel or 1

-- ---- the stream's format ---------------------------------------------------------

local input = io.stdin
local function read_exact(n, what)
    local s = input:read(n)
    if not s or #s < n then usage("the stream ended inside its " .. what) end
    return s
end

-- A WAV header: the fmt chunk, then chunks up to "data", whose length a
-- stream may leave unknown (0 or 0xFFFFFFFF): the samples run to its end.
local function read_wav_header()
    local riff = read_exact(12, "WAV header")
    if riff:sub(1, 4) ~= "RIFF" or riff:sub(9, 12) ~= "WAVE" then
        usage("standard input is not a WAV stream (no RIFF/WAVE header); for raw PCM give --format s16le or f32le")
    end
    local fmt
    while true do
        local id, size = string.unpack("<c4I4", read_exact(8, "WAV chunk header"))
        if id == "fmt " then
            local body = read_exact(size + size % 2, "fmt chunk")
            local tag, channels, rate, _, _, bits = string.unpack("<I2I2I4I4I2I2", body)
            if tag == 0xFFFE and size >= 26 then tag = string.unpack("<I2", body, 25) end
            fmt = { tag = tag, channels = channels, rate = rate, bits = bits }
        elseif id == "data" then
            if not fmt then usage("WAV stream: data before its fmt chunk") end
            break
        else
            read_exact(size + size % 2, id .. " chunk")
        end
    end
    if fmt.tag == 1 and fmt.bits == 16 then fmt.sample = "s16le"
    elseif fmt.tag == 3 and fmt.bits == 32 then fmt.sample = "f32le"
    else usage(string.format("WAV stream: format tag %d with %d-bit samples; 16-bit PCM or 32-bit float is read", fmt.tag, fmt.bits)) end
    return fmt
end

local fmt
if opts.format == "wav" then
    fmt = read_wav_header()
elseif opts.format == "s16le" or opts.format == "f32le" then
    local rate, channels = math.tointeger(tonumber(opts.rate)), math.tointeger(tonumber(opts.channels or "1"))
    if not rate or rate < 1 then usage("raw PCM needs --rate (samples per second)") end
    if not channels or channels < 1 then usage("--channels needs a positive integer") end
    fmt = { sample = opts.format, rate = rate, channels = channels }
else
    usage("--format must be wav, s16le or f32le, got '" .. opts.format .. "'")
end
if channel > fmt.channels then
    usage(string.format("the stream has %d channels; the detector listens to channel %d (audio.channel)", fmt.channels, channel))
end
if fmt.channels > 1 then
    io.stderr:write(string.format("monitor: the stream has %d channels: channel %d (the detector's audio.channel) "
                                  .. "is scored, the others are not\n", fmt.channels, channel))
end

-- ---- the sliding window -----------------------------------------------------------

local bytes = fmt.sample == "s16le" and 2 or 4
local code, scale = fmt.sample == "s16le" and "<i2" or "<f", fmt.sample == "s16le" and 1 / 32768 or 1
local frame_bytes = bytes * fmt.channels
local window_frames = math.floor(window * fmt.rate + 0.5)
local hop_frames = math.max(1, math.floor(hop * fmt.rate + 0.5))
local buf, first, last = {}, 1, 0 -- samples of the channel, buf[first..last]
local start_frame = 0             -- stream position of buf[first]
local windows, covered = 0, 0     -- windows scored; stream frames inside one of them

io.write("time,machine,anomaly_score,threshold,is_anomaly\n")
io.stdout:flush()

local function score_window()
    local w = mt.empty{ window_frames }
    local list = table.move(buf, first, first + window_frames - 1, 1, {})
    w:copy(mt.tensor(list))
    if fmt.rate ~= sample_rate then w = audio.resample(w, fmt.rate, sample_rate) end
    local r = detector.score_wave(det, w, opts.machine)
    windows, covered = windows + 1, start_frame + window_frames
    io.write(string.format("%.3f,%s,%.6g,%.6g,%s\n", start_frame / fmt.rate,
        r.machine_predicted and r.machine .. " (predicted)" or r.machine, r.anomaly_score, r.threshold,
        tostring(r.is_anomaly)))
    io.stdout:flush()
end

local pending = ""
local per_read = frame_bytes * 4096
while true do
    local chunk = input:read(per_read)
    if not chunk then break end
    pending = pending .. chunk
    local frames = #pending // frame_bytes
    for f = 0, frames - 1 do
        local at = f * frame_bytes + (channel - 1) * bytes + 1
        last = last + 1
        buf[last] = string.unpack(code, pending, at) * scale
    end
    pending = pending:sub(frames * frame_bytes + 1)
    while last - first + 1 >= window_frames do
        score_window()
        for k = first, first + hop_frames - 1 do buf[k] = nil end
        first, start_frame = first + hop_frames, start_frame + hop_frames
    end
end
local total = start_frame + math.max(0, last - first + 1)
local uncovered = total - covered
io.stderr:write(string.format("monitor: stream ended after %.2f s, %d windows scored%s\n", total / fmt.rate, windows,
    uncovered > 0 and string.format("; its last %.2f s are in no window (shorter than the %.2f s window)",
                                    uncovered / fmt.rate, window) or ""))
