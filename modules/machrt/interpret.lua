-- machrt.interpret: what the model gets wrong, as files and pictures (the
-- reference recipe's run_interpretations step, run after the last evaluation).
--
--   local interpret = require "machrt.interpret"
--   local files = interpret.write(dir, {
--       classes = split.classes,          -- class names, one per probability column
--       evaluation = ev,                  -- train.evaluate's table (probs, items, true_index, loss, ...)
--       val = split.val,                  -- {files, rows, ids, df}: ev.items index these (ids, the
--                                         -- CSV's own index, and df, its rows, are optional)
--       data_folder = cfg.dataset.data_folder,
--       history = state.history,          -- log rows, one per epoch
--       cfg = cfg,                        -- resolved config (audio section, experiment_name)
--       number_of_audios = 5,             -- how many worst clips get a picture (default 5)
--   })
--
-- Writes into dir/interpretations/:
--   confusion.csv              counts, rows true class, columns predicted class
--   confusion.png              annotated counts; confusion_normalized.png: row fractions (recall)
--   per_class.csv              class, precision, recall, f1, support
--   worst.csv                  every validation clip, ranked by the probability given to its
--                              true class (lowest first, ties by CSV row), with a picture column;
--                              index = the clip's id in the CSV's own index (val_predictions.csv's)
--   worst_<rank>.png           log-mel spectrogram of each of the number_of_audios worst clips
--                              (frequency in Hz on the mel-spaced axis, time in seconds)
--   worst_<rank>.wav           that clip as the model heard it (channel picked, resampled)
--   breakdown_<column>.csv     clips, errors, accuracy and macro F1 per value of each other
--                              column of val.df (model_id, condition, snr_db, ...)
-- and dir/curves.png (kept when the experiment already drew it) and dir/index.html,
-- which shows it all and plays the worst clips. Returns the list of paths written, in order.
--
-- Arguments that do not fit raise a clear error before anything is written.
-- A worst clip that cannot be read or drawn any more gets a row saying why and
-- no picture. Every file is written under a temporary name and renamed, so a
-- failure never leaves a partial file under its final name.

local mt = require "machrt"
local sys = require "machrt.sys"
local csv = require "machrt.data.csv"
local clips = require "machrt.data.clips"
local pipeline = require "machrt.pipeline"
local audio = require "machrt.audio"
local metrics = require "machrt.metrics"
local plot = require "machrt.plot"
local report = require "machrt.report"
local run_folder = require "machrt.run_folder"
local breakdown = require "machrt.breakdown"

local M = {}

M.FOLDER = "interpretations"
M.DEFAULT_NUMBER_OF_AUDIOS = 5
-- A column with more distinct values than this (a measurement that varies
-- per clip) gets no breakdown table: it would outgrow the page.
M.MAX_BREAKDOWN_VALUES = 50

local function fail(fmt, ...) error("interpret.write: " .. string.format(fmt, ...), 0) end

-- ---- CSV -------------------------------------------------------------------------

local function csv_text(header, rows) return csv.table_text(header, rows, { digits = 6 }) end

-- ---- arguments -----------------------------------------------------------------------

local function check(dir, o)
    if type(dir) ~= "string" or dir == "" then fail("dir must be a non-empty string, got %s", type(dir)) end
    if type(o) ~= "table" then fail("options must be a table, got %s", type(o)) end
    local classes = o.classes
    if type(classes) ~= "table" or #classes == 0 then fail("classes must be a non-empty list of names") end
    for i, c in ipairs(classes) do
        if type(c) ~= "string" and type(c) ~= "number" then fail("classes[%d] is a %s, not a name", i, type(c)) end
    end
    local ev, val = o.evaluation, o.val
    if type(ev) ~= "table" then fail("evaluation must be the table train.evaluate returns, got %s", type(ev)) end
    if type(val) ~= "table" or type(val.files) ~= "table" then
        fail("val must be the split's validation items {files = {...}, rows = {...}}")
    end
    local probs = ev.probs
    if not mt.is_tensor(probs) or probs:dim() ~= 2 then fail("evaluation.probs must be an {n, C} tensor") end
    local n, C = probs:size(1), probs:size(2)
    if C ~= #classes then fail("evaluation.probs has %d columns but there are %d classes", C, #classes) end
    if n == 0 then fail("evaluation.probs has no rows (no validation clip was scored)") end
    for _, key in ipairs { "items", "true_index" } do
        if type(ev[key]) ~= "table" or #ev[key] ~= n then
            fail("evaluation.%s must list %d entries (one per probs row)", key, n)
        end
    end
    for k = 1, n do
        local i = ev.items[k]
        if math.type(i) ~= "integer" or i < 1 or i > #val.files then
            fail("evaluation.items[%d] = %s is not a validation item (1..%d)", k, tostring(i), #val.files)
        end
    end
    local count = o.number_of_audios
    if count == nil then count = M.DEFAULT_NUMBER_OF_AUDIOS end
    if math.type(count) ~= "integer" or count < 0 then
        fail("number_of_audios must be a non-negative integer, got %s", tostring(count))
    end
    if o.history ~= nil and type(o.history) ~= "table" then fail("history must be a list of log rows") end
    if o.cfg ~= nil and type(o.cfg) ~= "table" then fail("cfg must be the resolved config table") end
    return count
end

-- ---- the worst clips ------------------------------------------------------------------

-- Every scored clip as {k (probs row), item, row, file, true, predicted, p_true},
-- lowest p_true first; ties go by CSV row so the order never depends on sorting.
local function ranked(ev, val, m)
    local list = {}
    for k, i in ipairs(ev.items) do
        local t = ev.true_index[k]
        local row = val.rows and val.rows[i] or i
        list[k] = { k = k, item = i, row = row, index = val.ids and val.ids[i] or row, file = val.files[i],
                    true_index = t, predicted = m.predicted[k], p_true = ev.probs:get(k, t) }
    end
    table.sort(list, function(a, b)
        if a.p_true ~= b.p_true then return a.p_true < b.p_true end
        if a.row ~= b.row then return a.row < b.row end
        return a.k < b.k
    end)
    for r, w in ipairs(list) do w.rank = r end
    return list
end

-- The clip as the model heard it (pipeline.decode), with reasons for a file
-- that is gone or empty.
local function decode(path, a, max_seconds)
    local st = sys.stat(path)
    if not st then error("file not found: " .. path, 0) end
    if st.is_dir then error("not a file: " .. path, 0) end
    local wave = pipeline.decode(path, { sample_rate = a.sample_rate, channel = a.channel,
                                         resampler = a.resampler, duration = max_seconds })
    if wave:size(1) == 0 then error(path .. " holds no samples", 0) end
    return wave
end

--- A long path keeps its end (the part that tells clips apart), so a
--- picture's title fits.
function M.short_path(file, max)
    if #file <= max then return file end
    return "..." .. file:sub(-(max - 3))
end

-- The mel scales of the front end's filterbank (audio.mel_scale): HTK's
-- (machrt.audio.MelSpectrogram's default) and librosa's slaney, linear up
-- to 1 kHz and logarithmic above.
local function htk_mel(hz) return 2595 * math.log(1 + hz / 700, 10) end

local SLANEY_STEP, SLANEY_LOG_HZ = 200 / 3, 1000
local SLANEY_LOG_MEL, SLANEY_LOG_STEP = SLANEY_LOG_HZ / SLANEY_STEP, math.log(6.4) / 27

local function slaney_mel(hz)
    if hz < SLANEY_LOG_HZ then return hz / SLANEY_STEP end
    return SLANEY_LOG_MEL + math.log(hz / SLANEY_LOG_HZ) / SLANEY_LOG_STEP
end

local HZ_TICKS = { 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000 }

--- The frequency axis of a log-mel picture of audio section `a`: band b
--- (1-based) is centred at mel(f_min) + b * step, step = (mel(f_max) -
--- mel(f_min)) / (n_mels + 1), as the filterbank lays them out, on the
--- section's mel scale (a.mel_scale: "htk", the default, or "slaney").
--- Returns the axis extent in mel ({low, high}: the outer edges of the
--- first and last bands) and ticks {{mel, "Hz"}, ...} at round frequencies.
function M.frequency_axis(a)
    local mel = a.mel_scale == "slaney" and slaney_mel or htk_mel
    local lo, hi = mel(a.minimum_frequency or 0), mel(a.maximum_frequency or a.sample_rate / 2)
    local n = a.mel_frequency_bins
    local step = (hi - lo) / (n + 1)
    local range, ticks = { lo + 0.5 * step, lo + (n + 0.5) * step }, {}
    for _, hz in ipairs(HZ_TICKS) do
        local m = mel(hz)
        if m >= range[1] and m <= range[2] then ticks[#ticks + 1] = { m, tostring(hz) } end
    end
    return range, ticks
end

M.SPECTROGRAM_AXES = "frequency (Hz, mel-spaced) against time (s)"

--- The log-mel picture of a clip as the model heard it, for every page
--- that shows clips (these interpretations and the anomaly run's): decodes
--- `path` with audio section `a` (channel, rate, resampler; at most
--- opts.max_seconds) and draws its log-mel spectrogram into `png`, titled
--- opts.title, frequency in Hz on the mel-spaced axis (M.frequency_axis).
--- opts.mel: a MelSpectrogram of `a` made once for many pictures. Raises
--- with the reason when the clip cannot be drawn; returns the wave drawn.
function M.clip_picture(png, path, a, opts)
    opts = opts or {}
    local wave = decode(path, a, opts.max_seconds)
    local db = audio.amplitude_to_db((opts.mel or pipeline.mel_spectrogram(a)):forward(wave))
    local top = db:max()
    if top ~= top then error("the spectrogram holds NaN (a damaged file?)", 0) end
    local yrange, yticks = M.frequency_axis(a)
    plot.heatmap(png, db, {
        title = opts.title, xlabel = "time (s)", ylabel = "frequency (Hz)", clabel = "dB", colormap = "magma",
        origin = "lower", xrange = { 0, wave:size(1) / a.sample_rate }, yrange = yrange, yticks_at = yticks,
        -- 80 dB below the peak, as librosa's top_db: empty bands above Nyquist
        -- (-100 dB) would otherwise wash out the rest of the picture.
        vmin = math.max(db:min(), top - 80), vmax = top,
        width = 960, height = 420,
    })
    return wave
end

-- One worst clip's picture; raises with the reason when the clip cannot be
-- drawn. Returns the wave it drew.
local function draw_clip(png, w, classes, o, mel, a)
    return M.clip_picture(png, clips.resolve(o.data_folder, w.file), a, {
        mel = mel, max_seconds = o.cfg and o.cfg.prediction and o.cfg.prediction.max_inference_chunk_seconds,
        title = string.format("%s  (true %s, predicted %s, p_true %.3f)", M.short_path(w.file, 60),
                              classes[w.true_index], classes[w.predicted], w.p_true) })
end

-- ---- the page ---------------------------------------------------------------------------

local function fmt_number(v)
    if type(v) ~= "number" then return v end
    if v ~= v then return "nan" end
    return v
end

local LOG_COLUMNS = run_folder.LOG_COLUMNS

--- Writes the interpretation files of a finished evaluation; see the header.
function M.write(dir, o)
    local count = check(dir, o)
    local classes, ev, val = {}, o.evaluation, o.val
    for i, c in ipairs(o.classes) do classes[i] = tostring(c) end
    local C = #classes
    local history = o.history or {}
    local cfg = o.cfg or {}
    -- Scores recomputed from probs and truth: the files agree with each other
    -- whatever else the evaluation table carries.
    local m = metrics.classification(ev.probs, ev.true_index, classes)

    local out = dir .. "/" .. M.FOLDER
    sys.mkdir(out)
    local written = {}
    local function write(path, text)
        sys.write_file(path, text)
        written[#written + 1] = path
    end

    -- Confusion matrix, counts and row fractions.
    local header, rows = breakdown.confusion(m, classes)
    local counts, fractions = mt.zeros{ C, C }, mt.zeros{ C, C }
    for a = 1, C do
        local support = 0
        for b = 1, C do
            counts:set(m.confusion[a][b], a, b)
            support = support + m.confusion[a][b]
        end
        for b = 1, C do fractions:set(support > 0 and m.confusion[a][b] / support or 0 / 0, a, b) end
    end
    write(out .. "/confusion.csv", csv_text(header, rows))
    local n = ev.probs:size(1)
    local side = math.max(560, math.min(1100, 160 + 70 * C))
    local heat = { xticks = classes, yticks = classes, xlabel = "predicted", ylabel = "true",
                   annotate = true, square = true, width = side + 80, height = side }
    heat.title, heat.fmt, heat.clabel = string.format("confusion matrix (%d validation clips)", n), "%d", "clips"
    heat.vmin = 0 -- an empty cell is always the darkest colour
    plot.heatmap(out .. "/confusion.png", counts, heat)
    written[#written + 1] = out .. "/confusion.png"
    heat.title, heat.fmt, heat.clabel = "confusion matrix, fraction of each true class", "%.2f", "fraction"
    heat.vmin, heat.vmax = 0, 1
    plot.heatmap(out .. "/confusion_normalized.png", fractions, heat)
    written[#written + 1] = out .. "/confusion_normalized.png"

    -- Per-class scores.
    local class_header, per_class = breakdown.per_class(m, classes)
    write(out .. "/per_class.csv", csv_text(class_header, per_class))

    -- Scores per value of the CSV's other columns (model_id, condition, snr_db, ...).
    local breakdowns = {}
    if type(val.df) == "table" and val.df.columns then
        local ds = type(cfg.dataset) == "table" and cfg.dataset or {}
        local skip = { [ds.audio_column or "audio"] = true }
        for _, c in ipairs(ds.label_columns or { "label" }) do skip[c] = true end
        local probs = ev.probs:totable()
        for _, name in ipairs(breakdown.columns(val.df, skip, M.MAX_BREAKDOWN_VALUES)) do
            local column, values = val.df:column(name), {}
            for k, i in ipairs(ev.items) do values[k] = column[i] end
            local bh, br = breakdown.by_column(name, values, probs, ev.true_index, classes)
            write(string.format("%s/breakdown_%s.csv", out, (name:gsub("[^%w_.-]", "_"))), csv_text(bh, br))
            breakdowns[#breakdowns + 1] = { title = "Validation scores by " .. name, header = bh, rows = br }
        end
    end

    -- The worst clips: pictures for the first `count`, the full ranking in CSV.
    local list = ranked(ev, val, m)
    local a = cfg.audio
    local mel, mel_err
    if count > 0 and type(a) == "table" then
        local ok, made = pcall(pipeline.mel_spectrogram, a)
        if ok then mel = made else mel_err = "no spectrogram: " .. tostring(made) end
    elseif count > 0 then
        mel_err = "no spectrogram: cfg.audio is missing"
    end
    local worst_images, worst_rows = {}, {}
    for r, w in ipairs(list) do
        if r > count then break end
        local png = string.format("worst_%d.png", r)
        local ok, wave_or_err = false, mel_err
        if mel then ok, wave_or_err = pcall(draw_clip, out .. "/" .. png, w, classes, o, mel, a) end
        if ok then
            w.picture = png
            written[#written + 1] = out .. "/" .. png
            -- The clip as the model heard it, beside its picture: the page
            -- plays it from the run folder, wherever the data went.
            local wav = string.format("worst_%d.wav", r)
            local saved, save_err = pcall(audio.save, out .. "/" .. wav, wave_or_err, a.sample_rate)
            if saved then written[#written + 1] = out .. "/" .. wav end
            local sound = saved and "" or "; no sound: " .. tostring(save_err)
            worst_images[#worst_images + 1] = {
                file = M.FOLDER .. "/" .. png, audio = saved and (M.FOLDER .. "/" .. wav) or nil,
                title = string.format("worst %d: %s (index %s), true %s, predicted %s, p_true %.3f; "
                                      .. "log-mel spectrogram, %s%s", r, w.file, tostring(w.index),
                                      classes[w.true_index], classes[w.predicted], w.p_true,
                                      M.SPECTROGRAM_AXES, sound) }
        else
            w.picture = "no picture: " .. tostring(wave_or_err)
        end
        worst_rows[r] = { r, w.index, w.file, classes[w.true_index], classes[w.predicted], w.p_true,
                          w.picture }
    end
    local wheader = { "rank", "index", "file", "label", "predicted", "p_true" }
    for c = 1, C do wheader[#wheader + 1] = "p_" .. classes[c] end
    wheader[#wheader + 1] = "picture"
    local wrows = {}
    for r, w in ipairs(list) do
        local row = { r, w.index, w.file, classes[w.true_index], classes[w.predicted], w.p_true }
        for c = 1, C do row[#row + 1] = ev.probs:get(w.k, c) end
        row[#row + 1] = w.picture or ""
        wrows[r] = row
    end
    write(out .. "/worst.csv", csv_text(wheader, wrows))

    -- Training curves: the experiment redraws curves.png every epoch; draw
    -- it here only when it is missing (a run from an older version).
    local images = {}
    if sys.stat(dir .. "/curves.png") then
        images[1] = { title = "training curves", file = "curves.png" }
    elseif #history > 0 then
        local ok, err = pcall(plot.training_curves, dir .. "/curves.png", history)
        if ok then
            images[1] = { title = "training curves", file = "curves.png" }
            written[#written + 1] = dir .. "/curves.png"
        else
            io.stderr:write("interpret: no curves.png: ", tostring(err), "\n")
        end
    end
    images[#images + 1] = { title = "confusion matrix (counts)", file = M.FOLDER .. "/confusion.png" }
    images[#images + 1] = { title = "confusion matrix (fraction of each true class = recall on the diagonal)",
                            file = M.FOLDER .. "/confusion_normalized.png" }
    for _, im in ipairs(worst_images) do images[#images + 1] = im end

    -- The page.
    local last = history[#history] or {}
    local function pick(x, y) if x ~= nil then return x end return y end
    local facts = {
        { "experiment", cfg.experiment_name or "" },
        { "fold folder", dir },
        { "epochs", last.epoch or #history },
        { "validation clips", n },
        { "val F1 (macro)", fmt_number(pick(ev.f1, m.f1)) },
        { "val accuracy", fmt_number(pick(ev.accuracy, m.accuracy)) },
        { "val ROC AUC (macro)", fmt_number(pick(ev.roc_auc, m.roc_auc)) },
        { "val loss", fmt_number(ev.loss) },
    }
    if type(ev.skipped) == "table" and #ev.skipped > 0 then
        facts[#facts + 1] = { "clips skipped (unreadable)", #ev.skipped }
    end
    local log_rows = {}
    for i, h in ipairs(history) do
        local r = {}
        for j, k in ipairs(LOG_COLUMNS) do r[j] = fmt_number(h[k]) end
        log_rows[i] = r
    end
    local worst_header = { "rank", "index", "file", "label", "predicted", "p_true", "picture" }
    local tables = {
        { title = "Per-class scores", header = { "class", "precision", "recall", "F1", "support" }, rows = per_class },
        { title = "Confusion matrix (rows: true class, columns: predicted)", header = header, rows = rows },
    }
    for _, b in ipairs(breakdowns) do tables[#tables + 1] = b end
    tables[#tables + 1] = {
        title = string.format("The %d worst-predicted validation clips (lowest probability of the true class)",
                              #worst_rows), header = worst_header, rows = worst_rows }
    if #log_rows > 0 then
        tables[#tables + 1] = { title = "Epoch log", header = LOG_COLUMNS, rows = log_rows }
    end
    local title = (cfg.experiment_name and cfg.experiment_name ~= "" and cfg.experiment_name .. ": " or "")
        .. "interpretations"
    written[#written + 1] = report.write_index(dir, { title = title, facts = facts, tables = tables, images = images })
    return written
end

return M
