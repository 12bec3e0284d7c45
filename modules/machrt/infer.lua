-- Inference on audio files with a trained model: the `Fix` method of the
-- reference (non-overlapping chunks of inference_chunk_seconds, at most
-- max_inference_chunk_seconds per file, mean of the chunks' sigmoid
-- outputs, argmax label), shared by validation, scripts/predict.lua and the
-- scorers that training packages.
--
--   local infer = require "machrt.infer"
--   local p = infer.load_run("runs/<experiment>/fold4")   -- or infer.load_scorer(dir)
--   local g = infer.load_run(dir, {device = "auto"})       -- "cpu" (default), "cuda" or "auto"
--   infer.predict_files(p, {"a.wav", "b.wav"}, {on_result = function(r) ... end})
--   -- r = {file =, label =, probs = {...}, chunks =, seconds =} or {file =, error =}
--
-- Files are read in windows of whole chunks (memory is bounded by the
-- window and the batch, not the file) and chunks of several files share a
-- batch, so short files run at full batch width.

local mt = require "machrt"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local csv = require "machrt.data.csv"
local pipeline = require "machrt.pipeline"
local nn = require "machrt.nn"
local run_folder = require "machrt.run_folder"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end


-- ---- the network inference runs --------------------------------------------------

-- Plans already built, per model and precision: validation asks every
-- epoch, and a plan keeps its primitives for the shapes it has seen.
local plans = setmetatable({}, {__mode = "k"})
local said_unplanned = false

--- What inference runs for `model` on `device`: on the CPU the fused
--- oneDNN plan of nn.compile_inference (in mt.gemm_precision(), with the
--- model's current weights), unless MACHRT_INFERENCE_PLAN=0 or the model
--- cannot be planned (said once: it then runs layer by layer); the model
--- itself elsewhere. Either answers :forward(x) with the same logits.
function M.inference_net(model, device)
    if (device or "cpu") ~= "cpu" or os.getenv("MACHRT_INFERENCE_PLAN") == "0" then return model end
    local precision = mt.gemm_precision() == "bf16" and "bf16" or "fp32"
    local per_model = plans[model] or {}
    plans[model] = per_model
    local plan = per_model[precision]
    if plan then return plan:refresh() end
    local ok, built = pcall(nn.compile_inference, model, {precision = precision})
    if not ok then
        if not said_unplanned then
            io.stderr:write(("machrt: inference runs layer by layer: %s\n"):format(tostring(built)))
            said_unplanned = true
        end
        return model
    end
    per_model[precision] = built
    return built
end

--- Frees the plans inference_net built for `model` (their weights are a
--- copy: about 0.3 GB for a ResNet34 in fp32 with Winograd kernels), so
--- that training does not carry them between validations; the next
--- inference_net builds a new one from the weights of then.
function M.release_plans(model)
    for _, plan in pairs(plans[model] or {}) do plan:release() end
    plans[model] = nil
end

--- Mean of the sigmoid outputs per clip: chunks {N, frames} holds
--- counts[1] chunks of the first clip, then counts[2] of the second, ...
--- Returns {#counts, C}.
function M.clip_probabilities(model, front, chunks, counts)
    local p = model:forward(front(chunks)):sigmoid():to("cpu") -- itself on the CPU
    local out = mt.empty{ #counts, p:size(2) }
    local at = 1
    for k, n in ipairs(counts) do
        out:select(1, k):copy(p:narrow(1, at, n):mean(1))
        at = at + n
    end
    return out
end

-- ---- predictors ----------------------------------------------------------------

local function predictor(cfg, classes, weights, source, opts)
    local device = pipeline.resolve_device(opts and opts.device or "cpu")
    -- No initialisation: the weights are loaded right away, on the host,
    -- then the model moves to the device.
    local model = pipeline.build_model(cfg.architecture, #classes, { init = false })
    local ok, err = pcall(model.load_state_dict, model, weights)
    if not ok then fail("%s: the weights do not fit the network: %s", source, tostring(err)) end
    if device ~= "cpu" then model:to(device) end
    model:evaluate()
    return {
        cfg = cfg, classes = classes, model = model, device = device, net = M.inference_net(model, device),
        -- Quiet: the all-zero mel filter notice was training's to give.
        front = pipeline.front_end(cfg.audio, device, { quiet = true }), source = source,
        sample_rate = cfg.audio.sample_rate, channel = cfg.audio.channel or 1,
        resampler = cfg.audio.resampler,
        chunk_seconds = cfg.prediction.inference_chunk_seconds,
        max_seconds = cfg.prediction.max_inference_chunk_seconds,
    }
end

--- A predictor from a training run folder (config.json + checkpoint).
--- opts.device: "cpu" (default), "cuda" or "auto"; on a device the front
--- end and the model run there and probabilities come back to the host.
function M.load_run(dir, opts)
    dir = dir:gsub("/$", "")
    local cfg_path, ckpt = dir .. "/config.json", dir .. "/checkpoint.safetensors"
    if not sys.stat(cfg_path) then fail("%s is not a run folder: it has no config.json", dir) end
    if not sys.stat(ckpt) then fail("run folder %s has no checkpoint (checkpoint.safetensors): was training interrupted before the first epoch ended?", dir) end
    local cfg = sys.read_json(cfg_path)
    -- Checked before the checkpoint is read: a list or a number would reach
    -- the first use of a setting (cfg.architecture) and fail there, unnamed.
    if type(cfg) ~= "table" or (next(cfg) ~= nil and cfg[1] ~= nil) then
        fail("%s: not a config (a JSON object of sections)", cfg_path)
    end
    local ok, tensors, meta = pcall(mt.load, ckpt)
    if not ok then fail("checkpoint %s cannot be read: %s", ckpt, tostring(tensors)) end
    run_folder.verify(ckpt, tensors, meta)
    local run = meta["machrt.run"] and sys.json_decode(meta["machrt.run"], ckpt)
    local classes = type(run) == "table" and run.classes
    if type(classes) ~= "table" or #classes == 0 then
        fail("checkpoint %s does not name its classes (machrt.run metadata)", ckpt)
    end
    for i, c in ipairs(classes) do
        if type(c) ~= "string" then fail("checkpoint %s: class %d is not a name: %s", ckpt, i, tostring(c)) end
    end
    -- The settings the model was trained with are in the checkpoint: a
    -- config.json edited since would build another front end or network.
    run_folder.check_trained_config(cfg_path, ckpt, meta, cfg)
    local weights = {}
    for k, v in pairs(tensors) do
        if not k:match("^state%.") then weights[k] = v end
    end
    return predictor(cfg, classes, weights, ckpt, opts)
end

--- A predictor from a scorer folder (manifest.json + weights), after
--- checking the weights' SHA-256 against the manifest. opts as load_run's.
function M.load_scorer(dir, opts)
    dir = dir:gsub("/$", "")
    local manifest_path = dir .. "/manifest.json"
    if not sys.stat(manifest_path) then fail("%s is not a scorer: it has no manifest.json", dir) end
    local m = sys.read_json(manifest_path)
    if type(m) ~= "table" or m.format ~= "machrt-scorer" then fail("%s: not a machrt scorer manifest", manifest_path) end
    local w = m.weights
    -- The weights file is one name in the scorer folder, never a path out of it.
    if type(w) ~= "table" or type(w.file) ~= "string" or not w.file:match("^[^/]+$") or w.file == ".."
            or type(w.sha256) ~= "string" then
        fail("%s: field 'weights' must name a file of the scorer folder and its sha256", manifest_path)
    end
    if type(m.classes) ~= "table" or #m.classes == 0 then
        fail("%s: field 'classes' must be a list of class names", manifest_path)
    end
    for i, c in ipairs(m.classes) do
        if type(c) ~= "string" then fail("%s: field 'classes': entry %d is not a name", manifest_path, i) end
    end
    for _, section in ipairs{ "architecture", "audio", "prediction" } do
        if type(m.config) ~= "table" or type(m.config[section]) ~= "table" then
            fail("%s: field 'config.%s' is missing", manifest_path, section)
        end
    end
    local weights_path = dir .. "/" .. w.file
    if not sys.stat(weights_path) then fail("scorer %s: weights file %s is missing", dir, m.weights.file) end
    local digest = sys.sha256_file(weights_path)
    if digest ~= m.weights.sha256 then
        fail("scorer %s: %s does not match its manifest checksum (sha256 %s, manifest says %s): "
             .. "the file was changed or damaged", dir, m.weights.file, digest, m.weights.sha256)
    end
    return predictor(m.config, m.classes, mt.load(weights_path), weights_path, opts)
end

-- ---- streaming prediction -------------------------------------------------------

-- Reads `path` in windows of whole chunks; calls emit(chunks {n, frames})
-- per window. Windows of up to 60 s of audio each, read with a second of
-- context either side so that resampling at a window edge sees the same
-- neighbours as it would in one piece.
local WINDOW_CHUNKS_SECONDS = 60
local CONTEXT_SECONDS = 1

local function stream_chunks(p, path, emit)
    local info = audio.info(path)
    local function load(offset, duration)
        return pipeline.decode(path, { sample_rate = p.sample_rate, channel = p.channel, info = info,
                                    resampler = p.resampler,
                                    offset = offset, duration = duration })
    end
    local total = math.min(info.seconds, p.max_seconds)
    local per_window = math.max(1, math.floor(WINDOW_CHUNKS_SECONDS / p.chunk_seconds)) * p.chunk_seconds
    if total <= per_window or total < p.chunk_seconds then
        emit(audio.chunks(load(0, total), p.sample_rate, p.chunk_seconds, { max_seconds = p.max_seconds }))
        return
    end
    local usable = math.floor(total / p.chunk_seconds) * p.chunk_seconds
    local start = 0
    while start < usable - 1e-9 do
        local len = math.min(per_window, usable - start)
        local before = math.min(CONTEXT_SECONDS, start)
        local after = math.min(CONTEXT_SECONDS, info.seconds - start - len)
        local w = load(start - before, before + len + after)
        local skip = math.floor(before * p.sample_rate + 0.5)
        local frames = math.floor(len * p.sample_rate + 0.5)
        frames = math.min(frames, w:size(1) - skip)
        emit(audio.chunks(w:narrow(1, skip + 1, frames), p.sample_rate, p.chunk_seconds))
        start = start + len
    end
end

--- Predicts files in order. opts: batch_chunks (default 32), on_result(r)
--- called once per file in input order, progress(done, total) optional.
function M.predict_files(p, files, opts)
    opts = opts or {}
    local batch_chunks = opts.batch_chunks or 32
    local frames = math.floor(p.chunk_seconds * p.sample_rate + 0.5)
    local C = #p.classes
    local results, next_out = {}, 1
    local batch, owners, filled = mt.empty{ batch_chunks, frames }, {}, 0
    local pending = {} -- file index -> {sum = {C}, chunks, left = chunks not yet scored, done_reading}

    local function emit_ready()
        while results[next_out] and (results[next_out].error or results[next_out].complete) do
            local r = results[next_out]
            results[next_out] = nil
            if not r.error then
                local best, probs = 1, {}
                for c = 1, C do
                    probs[c] = r.sum[c] / r.chunks
                    if probs[c] > probs[best] then best = c end
                end
                r = { file = r.file, label = p.classes[best], probs = probs, chunks = r.chunks,
                      seconds = r.chunks * p.chunk_seconds }
            end
            if opts.on_result then opts.on_result(r) end
            if opts.progress then opts.progress(next_out, #files) end
            next_out = next_out + 1
        end
    end

    local function flush()
        if filled == 0 then return end
        local x = filled == batch_chunks and batch or batch:narrow(1, 1, filled)
        local probs = (p.net or p.model):forward(p.front(x)):sigmoid():to("cpu") -- itself on the CPU
        for k = 1, filled do
            local st = pending[owners[k]]
            for c = 1, C do st.sum[c] = st.sum[c] + probs:get(k, c) end
            st.left = st.left - 1
            if st.left == 0 and st.done_reading then st.complete = true end
        end
        filled = 0
        emit_ready()
    end

    for i, path in ipairs(files) do
        local st = { file = path, sum = {}, chunks = 0, left = 0 }
        for c = 1, C do st.sum[c] = 0 end
        pending[i], results[i] = st, st
        local ok, err = pcall(stream_chunks, p, path, function(chunks)
            for k = 1, chunks:size(1) do
                filled = filled + 1
                batch:select(1, filled):copy(chunks:select(1, k))
                owners[filled] = i
                st.chunks, st.left = st.chunks + 1, st.left + 1
                if filled == batch_chunks then flush() end
            end
        end)
        if not ok then
            -- Chunks of a file that failed half-way are dropped with it.
            local kept = 0
            for k = 1, filled do
                if owners[k] ~= i then
                    kept = kept + 1
                    if kept ~= k then batch:select(1, kept):copy(batch:select(1, k)); owners[kept] = owners[k] end
                end
            end
            filled = kept
            -- The message names the file; the code position inside machrt does not help.
            st.error = tostring(err):gsub("\n.*", ""):gsub("^[^:]*%.lua:%d+: ", "")
        else
            st.done_reading = true
            if st.left == 0 then st.complete = true end
        end
        emit_ready()
    end
    flush()
    emit_ready()
end

--- The line a command prints when `errors` of `total` files could not be
--- read (it then exits with status 1): their rows say why.
function M.unreadable_line(name, errors, total)
    return string.format("%s: %d of %d file%s could not be read (the error column of %s says why)\n",
                         name, errors, total, total == 1 and "" or "s", errors == 1 and "its row" or "their rows")
end

-- ---- CSV output ------------------------------------------------------------------

--- The header of prediction CSVs: file, label, one probability column per
--- class, chunks, error.
function M.csv_header(p)
    local h = { "file", "label" }
    for _, c in ipairs(p.classes) do h[#h + 1] = "p_" .. c end
    h[#h + 1] = "chunks"
    h[#h + 1] = "error"
    return csv.row_text(h)
end

--- One result as a CSV line (an unreadable file: empty label and
--- probabilities, the reason in the error column).
function M.csv_row(p, r)
    local C = #p.classes
    local cells = { r.file, r.label }
    for c = 1, C do cells[2 + c] = r.probs and string.format("%.6f", r.probs[c]) or nil end
    if not r.error then cells[C + 3] = r.chunks end
    cells[C + 4] = r.error
    return csv.row_text(cells, C + 4)
end

return M
