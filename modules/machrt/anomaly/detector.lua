-- A trained anomaly detector as inference uses it: the network(s), each
-- machine's normal statistics and its threshold; saved beside the run's
-- checkpoints, packaged as a scorer folder, and read back from either.
--
--   local det = detector.new(cfg, split, trained, thresholds)   -- at the end of training
--   detector.save_run(dir, det)                      -- detector.json + normal_stats.safetensors
--   local scorer_dir = detector.write_scorer(dir, det)   -- dir/scorer: manifest (SHA-256), files, score.lua
--   local det = detector.load_run(dir) / detector.load_scorer(dir, {device = "auto"})
--   local r = detector.score_file(det, "clip.wav", "fan/id_00")
--   local r = detector.score_wave(det, wave, machine)  -- {frames} at the detector's sample rate
--   -- r = {machine =, machine_predicted =, anomaly_score =, threshold =, is_anomaly =, chunks =}
local mt = require "machrt"
local nn = require "machrt.nn"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local pipeline = require "machrt.pipeline"
local train = require "machrt.train"
local run_folder = require "machrt.run_folder"
local ae = require "machrt.anomaly.autoencoder"
local emb = require "machrt.anomaly.embedding"
local frames = require "machrt.anomaly.frames"

local M = {}

M.FORMAT = "machrt-anomaly-scorer"
M.INFO = "detector.json"
M.STATS = "normal_stats.safetensors"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local read_json = sys.read_json

local function type_file(machine_type) return "autoencoder_" .. machine_type:gsub("[^%w_.-]", "_") .. ".safetensors" end

--- The detector of a finished training: trained = {model, stats} (embedding)
--- or {models} (autoencoder, by machine type).
function M.new(cfg, split, trained, thresholds, device)
    return { cfg = cfg, method = cfg.anomaly.method, score = cfg.anomaly.score, machines = split.machines,
             types = split.types, thresholds = thresholds, model = trained.model, stats = trained.stats,
             models = trained.models, device = device or "cpu", front = pipeline.front_end(cfg.audio, device) }
end

local function info_of(det)
    return { method = det.method, score = det.score, machines = det.machines, types = det.types,
             thresholds = det.thresholds }
end

-- The saved parts of one Gaussian (clip embeddings, or a kind of frame rows).
local function put_stats(t, prefix, s)
    t[prefix .. ".mean"] = s.mean
    if s.scale then t[prefix .. ".scale"] = s.scale end
    if s.precision then t[prefix .. ".precision"] = s.precision end
end

local function stats_tensors(det)
    local t = {}
    for m, s in pairs(det.stats or {}) do
        put_stats(t, m, s)
        for _, kind in ipairs(frames.KINDS) do
            if s[kind] then put_stats(t, m .. "." .. kind, s[kind]) end
        end
        if s.mixture then
            for _, part in ipairs{ "scale", "weights", "means", "variances" } do
                t[m .. ".mixture." .. part] = s.mixture[part]
            end
        end
        for name, z in pairs(s.norm or {}) do t[m .. ".norm." .. name] = mt.tensor{ z.mean, z.sd } end
    end
    return t
end

-- The statistics saved under prefix (nil when absent), with their Gaussian.
local function get_stats(stats, prefix)
    local mean = stats[prefix .. ".mean"]
    if not mean then return nil end
    local s = { mean = mean, scale = stats[prefix .. ".scale"], precision = stats[prefix .. ".precision"] }
    if s.precision then s.gaussian = nn.Mahalanobis(mean, s.precision) end
    return s
end

-- The frame mixture saved under prefix; nil when absent (a run made before
-- the mixture score), a clear error when only some of its parts are there.
local function get_mixture(stats, prefix)
    local g, seen = {}, 0
    for _, part in ipairs{ "scale", "weights", "means", "variances" } do
        g[part] = stats[prefix .. "." .. part]
        if g[part] then seen = seen + 1 end
    end
    if seen == 0 then return nil end
    if seen < 4 then fail("normal statistics: the frame mixture %s is incomplete (%d of its 4 tensors)", prefix, seen) end
    return g
end

--- detector.json (method, score, machines, thresholds) and, for the
--- embedding detector, normal_stats.safetensors, into the run folder.
function M.save_run(dir, det)
    sys.write_file(dir .. "/" .. M.INFO, sys.json_encode(info_of(det), { indent = true }) .. "\n")
    if det.method == "embedding" then mt.save(dir .. "/" .. M.STATS, stats_tensors(det)) end
end

-- The detector's networks from weight tables, on the CPU, then on `device`.
local function assemble(cfg, info, weights_of, stats, device, source)
    local det = { cfg = cfg, method = info.method, score = info.score, machines = info.machines,
                  types = info.types, thresholds = info.thresholds, device = device, source = source,
                  front = pipeline.front_end(cfg.audio, device) }
    local function load(model, weights, what)
        local ok, err = pcall(model.load_state_dict, model, weights)
        if not ok then fail("%s: the weights do not fit the network: %s", what, tostring(err)) end
        if device ~= "cpu" then model:to(device) end
        model:evaluate()
        return model
    end
    if info.method == "embedding" then
        local model = emb.build(cfg, { machines = info.machines }, { init = false })
        det.model = load(model, weights_of("model"), source)
        det.stats = {}
        for _, m in ipairs(info.machines) do
            local s = get_stats(stats, m) or fail("%s: no normal statistics for machine %s", source, m)
            for _, kind in ipairs(frames.KINDS) do s[kind] = get_stats(stats, m .. "." .. kind) end
            s.mixture = get_mixture(stats, m .. ".mixture")
            for _, name in ipairs(emb.ENSEMBLE_PARTS) do
                local z = stats[m .. ".norm." .. name]
                if z then
                    s.norm = s.norm or {}
                    s.norm[name] = { mean = z:get(1), sd = z:get(2) }
                end
            end
            det.stats[m] = s
        end
    else
        local bins, frames = cfg.audio.mel_frequency_bins, cfg.autoencoder.frames
        det.models = {}
        for _, t in ipairs(info.types) do
            local model = nn.Module.without_init(function() return ae.build(cfg, bins * frames) end)
            det.models[t] = load(model, weights_of(t), source .. " (" .. t .. ")")
        end
    end
    return det
end

local function without_optimizer(tensors)
    local w = {}
    for k, v in pairs(tensors) do if not k:match("^state%.") then w[k] = v end end
    return w
end

--- The detector of a finished run folder (config.json, detector.json, the
--- checkpoints, normal_stats.safetensors). opts.device: cpu (default), cuda, auto.
function M.load_run(dir, opts)
    dir = dir:gsub("/$", "")
    local device = pipeline.resolve_device(opts and opts.device or "cpu")
    if not sys.stat(dir .. "/" .. M.INFO) then
        fail("%s has no %s: not an anomaly run, or its training did not finish", dir, M.INFO)
    end
    local cfg, info = read_json(dir .. "/config.json"), read_json(dir .. "/" .. M.INFO)
    local function weights_of(which)
        local path = which == "model" and dir .. "/" .. train.CHECKPOINT
            or ae.model_dir(dir, which) .. "/" .. train.CHECKPOINT
        if not sys.stat(path) then fail("run folder %s: %s is missing", dir, path) end
        local tensors, meta = mt.load(path)
        run_folder.verify(path, tensors, meta) -- a damaged or edited checkpoint is refused, as infer.load_run does
        return without_optimizer(tensors)
    end
    local stats = info.method == "embedding" and mt.load(dir .. "/" .. M.STATS) or {}
    return assemble(cfg, info, weights_of, stats, device, dir)
end

--- The scorer folder: the weights (one file per autoencoder), the normal
--- statistics, manifest.json (the detector, its thresholds, the front end's
--- settings and every file's SHA-256) and score.lua.
function M.write_scorer(dir, det)
    local out = dir .. "/scorer"
    sys.mkdir(out)
    local files = {}
    local function put(name, tensors)
        mt.save(out .. "/" .. name, tensors)
        files[#files + 1] = { file = name, sha256 = sys.sha256_file(out .. "/" .. name) }
    end
    if det.method == "embedding" then
        put("model.safetensors", det.model:state_dict())
        put(M.STATS, stats_tensors(det))
    else
        for _, t in ipairs(det.types) do put(type_file(t), det.models[t]:state_dict()) end
    end
    local keep = {}
    for _, section in ipairs{ "anomaly", "autoencoder", "architecture", "audio", "prediction" } do
        keep[section] = det.cfg[section]
    end
    keep.experiment_name = det.cfg.experiment_name
    local manifest = info_of(det)
    manifest.format, manifest.version, manifest.machrt = M.FORMAT, 1, mt.version
    manifest.config, manifest.files = keep, files
    sys.write_file(out .. "/manifest.json", sys.json_encode(manifest, { indent = true }) .. "\n")
    sys.write_file(out .. "/score.lua", [=[
-- A packaged machrt anomaly detector: scores audio files and decides.
--   machrt score.lua --machine fan/id_00 file.wav [file2.wav ...]   (prints a CSV)
--   machrt score.lua file.wav ...    (embedding detector: the machine it recognises)
-- Needs only this folder; every file's checksum is verified before use.
local detector = require "machrt.anomaly.detector"
local here = (arg and arg[0] or "score.lua"):match("^(.*)/[^/]*$") or "."
local det = detector.load_scorer(here, { device = "auto" })
local machine, files = nil, {}
local i = 1
while i <= #arg do
    if arg[i] == "--machine" then machine, i = arg[i + 1], i + 1 else files[#files + 1] = arg[i] end
    i = i + 1
end
if #files == 0 then
    io.stderr:write("usage: machrt " .. (arg[0] or "score.lua") .. " [--machine TYPE/id_NN] file.wav [...]\n")
    os.exit(2)
end
io.write(detector.csv_header(), "\n")
for _, f in ipairs(files) do io.write(detector.csv_row(detector.score_file_safe(det, f, machine)), "\n") end
]=])
    return out
end

--- Whether `dir` holds an anomaly scorer (its manifest's format).
function M.is_scorer(dir)
    local path = dir:gsub("/$", "") .. "/manifest.json"
    if not sys.stat(path) then return false end
    return read_json(path).format == M.FORMAT
end

--- The machine (TYPE/id_NN, or TYPE without a model_id column) of every
--- row of a dataframe with the run's label column, or nil without it.
function M.machines_of(df, cfg)
    local ds = cfg.dataset
    local label, id = ds.label_columns[1], ds.model_id_column
    if not df:has_column(label) then return nil end
    local types, ids = df:column(label), df:has_column(id) and df:column(id)
    local out = {}
    for i, t in ipairs(types) do out[i] = ids and t .. "/id_" .. ids[i] or t end
    return out
end

--- The detector of a scorer folder, after checking every file's SHA-256
--- against manifest.json. opts.device as load_run's.
function M.load_scorer(dir, opts)
    dir = dir:gsub("/$", "")
    local device = pipeline.resolve_device(opts and opts.device or "cpu")
    local path = dir .. "/manifest.json"
    if not sys.stat(path) then fail("%s is not a scorer: it has no manifest.json", dir) end
    local m = read_json(path)
    if m.format ~= M.FORMAT then fail("%s: not a machrt anomaly scorer manifest (format %s)", path, tostring(m.format)) end
    local loaded = {}
    for _, f in ipairs(m.files) do
        local p = dir .. "/" .. f.file
        if not sys.stat(p) then fail("scorer %s: %s is missing", dir, f.file) end
        local digest = sys.sha256_file(p)
        if digest ~= f.sha256 then
            fail("scorer %s: %s does not match its manifest checksum (sha256 %s, manifest says %s): "
                 .. "the file was changed or damaged", dir, f.file, digest, f.sha256)
        end
        loaded[f.file] = mt.load(p)
    end
    local function weights_of(which)
        return loaded[which == "model" and "model.safetensors" or type_file(which)]
    end
    return assemble(m.config, m, weights_of, loaded[M.STATS] or {}, device, dir)
end

-- ---- scoring -------------------------------------------------------------------

local function known_machine(det, machine)
    if det.thresholds[machine] then return end
    fail("machine '%s' is not one this detector knows (%s)", tostring(machine), table.concat(det.machines, ", "))
end

--- Scores chunks {k, frames} of one recording of `machine` (nil: the
--- embedding detector's classifier names it; the autoencoder needs it).
function M.score_chunks(det, chunks, machine)
    local r = { chunks = chunks:size(1) }
    local x = det.front(chunks)
    if det.method == "embedding" then
        local e, out = emb.chunk_features(det.model, x, det.cfg.anomaly.features)
        e = e:mean(1):reshape{ 1, -1 }
        local logits = out:mean(1):totable()
        if machine == nil then
            local best = 1
            for k = 2, #logits do if logits[k] > logits[best] then best = k end end
            machine, r.machine_predicted = det.machines[best], true
        end
        known_machine(det, machine)
        local k
        for j, m in ipairs(det.machines) do if m == machine then k = j end end
        if det.score == "nll" then
            r.anomaly_score = emb.nll(logits, k)
        else
            local fr = frames.of_chunks(x)
            local got = emb.score_machine(det.stats[machine], e, { frames = { fr.frames }, deltas = { fr.deltas } })
            r.anomaly_score = got[det.score] and got[det.score][1]
                or fail("machine %s has no statistics for the %s score (a single normal training clip, or a "
                        .. "run made before the score existed)", machine, det.score)
        end
    else
        if machine == nil then
            fail("the autoencoder detector needs the machine of a recording (--machine TYPE/id_NN)")
        end
        known_machine(det, machine)
        local t = machine:match("^(.-)/") or machine
        local model = det.models[t] or fail("no autoencoder for machine type '%s'", t)
        r.anomaly_score = ae.reconstruction_error(model, ae.frame_vectors(x, det.cfg.autoencoder.frames))
    end
    r.machine, r.threshold = machine, det.thresholds[machine]
    r.is_anomaly = r.anomaly_score > r.threshold
    return r
end

--- Scores a wave {frames} (at the detector's sample rate) as one chunk.
function M.score_wave(det, wave, machine)
    return M.score_chunks(det, wave:reshape{ 1, wave:size(1) }, machine)
end

--- Scores a file: decoded as training heard it, in Fix chunks.
function M.score_file(det, path, machine)
    local a, p = det.cfg.audio, det.cfg.prediction
    local wave = pipeline.decode(path, { sample_rate = a.sample_rate, channel = a.channel,
                                             resampler = a.resampler })
    local chunks = audio.chunks(wave, a.sample_rate, p.inference_chunk_seconds,
                                { max_seconds = p.max_inference_chunk_seconds })
    local r = M.score_chunks(det, chunks, machine)
    r.file = path
    return r
end

--- score_file, with an error turned into a result {file, error}.
function M.score_file_safe(det, path, machine)
    local ok, r = pcall(M.score_file, det, path, machine)
    if ok then return r end
    return { file = path, machine = machine, error = (tostring(r):gsub("\n.*", ""):gsub("^[^:]*%.lua:%d+: ", "")) }
end

local csv = require "machrt.data.csv"
M.CSV_COLUMNS = { "file", "machine", "anomaly_score", "threshold", "is_anomaly", "chunks", "error" }

function M.csv_header() return csv.row_text(M.CSV_COLUMNS) end

function M.csv_row(r)
    local machine = r.machine and (r.machine_predicted and r.machine .. " (predicted)" or r.machine) or nil
    return csv.row_text({ r.file, machine, r.anomaly_score and string.format("%.6g", r.anomaly_score),
                          r.threshold and string.format("%.6g", r.threshold),
                          r.anomaly_score and tostring(r.is_anomaly), r.chunks, r.error }, #M.CSV_COLUMNS)
end

return M
