-- Scores a trained run or a scorer on a labelled test set: the metrics, the
-- per-class table, the confusion matrix and a breakdown per extra column
-- (CLI.usage below is the full help, printed by --help).

local mt = require "machrt"
local sys = require "machrt.sys"
local infer = require "machrt.infer"
local pipeline = require "machrt.pipeline"
local data = require "machrt.data"
local csv = require "machrt.data.csv"
local clips = require "machrt.data.clips"
local metrics = require "machrt.metrics"
local breakdown = require "machrt.breakdown"
local log = require "machrt.log"
local cli = require "machrt.cli"

local CLI = {
    name = "evaluate",
    usage = [[
usage: machrt scripts/evaluate.lua --run runs/<experiment>/fold4 --input labelled.csv [--out DIR]

Options:
  --run DIR          a training run folder (config.json + checkpoint.safetensors)
                     or a scorer folder (manifest.json + checked weights)
  --input FILE       a CSV with an audio column and a label column; every other
                     column (model_id, condition, snr_db, ...) gets a breakdown
  --data-folder DIR  where the CSV's relative paths start (default: the CSV's folder)
  --column NAME      the audio column (default: the run's dataset.audio_column, or audio)
  --label NAME       the label column (default: the run's label column, or label)
  --by COL[,COL...]  the breakdown columns (default: all but the index, audio and label)
  --out DIR          writes metrics.json, per_class.csv, confusion.csv,
                     breakdown_<column>.csv and predictions.csv there
  --batch N          chunks per forward pass (default 32)
  --threads N        compute threads (default: all cores)
  --device D         auto (default: cuda when mt.cuda_available()), cpu or cuda
  --help             this text

Each file goes through the training front end (Fix chunks, mean of the
chunks' sigmoid outputs); the predicted class is the argmax, or the
prediction.probability_threshold rule for two classes, as validation
scores it. predictions.csv starts with the input CSV's own index (its
unnamed first column, else the 0-based row position) so it joins back.
Exit status: 0; 1 when some file could not be read (it is listed, and the
scores cover the others); 2 for a bad argument or input (named).
]],
    options = { run = "value", input = "value", out = "value", column = "value", label = "value", by = "value",
                ["data-folder"] = "value", batch = "value", threads = "value", device = "value" },
}
local function usage(msg) cli.fail(CLI, msg) end

local function die(msg)
    io.stderr:write("evaluate: ", msg, "\n")
    os.exit(2)
end

local opts = cli.parse(arg, CLI)
if not opts.run then usage("give --run DIR (a run fold folder or a scorer folder)") end
if not opts.input then usage("give --input labelled.csv") end
local threads = cli.integer(CLI, opts, "threads", 1)
if threads then mt.set_num_threads(threads) end
local batch = cli.integer(CLI, opts, "batch", 1) or 32
local ok, device = pcall(pipeline.resolve_device, opts.device or "auto", "--device")
if not ok then usage(device) end

-- The model: a scorer folder has a manifest, a run folder a config.json.
local run_dir = opts.run:gsub("/$", "")
local loaded
if sys.stat(run_dir .. "/manifest.json") then
    ok, loaded = pcall(infer.load_scorer, run_dir, { device = device })
else
    ok, loaded = pcall(infer.load_run, run_dir, { device = device })
end
if not ok then die(tostring(loaded)) end
local p = loaded
local ds = p.cfg.dataset or {}
if ds.label_columns and #ds.label_columns > 1 then
    die(string.format("--run %s is a multi-label run (dataset.label_columns = %s): evaluate.lua scores "
                      .. "single-label classifiers", run_dir, table.concat(ds.label_columns, ",")))
end
local classes = p.classes
local class_of = {}
for c, name in ipairs(classes) do class_of[name] = c end

-- The labelled set: every label must be one of the run's classes.
ok, loaded = pcall(data.read_csv, opts.input)
if not ok then die(tostring(loaded)) end
local df = loaded
local audio_column = opts.column or ds.audio_column or "audio"
local label_column = opts.label or (ds.label_columns and ds.label_columns[1]) or "label"
ok, loaded = pcall(df.require_columns, df, { audio_column }, "--column (the audio column)")
if not ok then die(tostring(loaded)) end
ok, loaded = pcall(df.require_columns, df, { label_column }, "--label (the label column)")
if not ok then die(tostring(loaded)) end
if df:nrows() == 0 then die("--input " .. opts.input .. " has no data rows (only a header)") end
local labels, names = df:column(label_column), df:column(audio_column)
local truth = {}
for r, label in ipairs(labels) do
    truth[r] = class_of[label]
    if not truth[r] then
        die(string.format("--input %s, row %d (%s): label '%s' in column '%s' is not a class of the run "
                          .. "(classes: %s)", opts.input, r, names[r], label, label_column,
                          table.concat(classes, ", ")))
    end
end
local by
if opts.by then
    by = {}
    for name in opts.by:gmatch("[^,]+") do by[#by + 1] = name end
    ok, loaded = pcall(df.require_columns, df, by, "--by")
    if not ok then die(tostring(loaded)) end
else
    by = breakdown.columns(df, { [audio_column] = true, [label_column] = true })
end
-- The CSV's own index, as val_predictions.csv carries it.
local ids = {}
local index = df.columns[1] == csv.INDEX_COLUMN and df:column(csv.INDEX_COLUMN)
for r = 1, df:nrows() do ids[r] = index and index[r] or tostring(r - 1) end

-- Predict.
local base = opts["data-folder"] or opts.input:match("^(.*)/[^/]*$") or "."
local files = {}
for r, name in ipairs(names) do files[r] = clips.resolve(base, name) end
local results = {}
local bar = log.progress{ title = "evaluate", total = #files, fields = {}, stream = io.stderr }
infer.predict_files(p, files, {
    batch_chunks = batch,
    on_result = function(r) results[#results + 1] = r end,
    progress = function(done) bar:update(done, {}, 1) end,
})
local seconds = bar:finish()

-- Score the readable files.
local kept, probs, kept_truth, unreadable = {}, {}, {}, {}
for r, res in ipairs(results) do
    if res.error then
        unreadable[#unreadable + 1] = { row = r, file = names[r], error = res.error }
    else
        kept[#kept + 1] = r
        probs[#probs + 1] = res.probs
        kept_truth[#kept_truth + 1] = truth[r]
    end
end
if #kept == 0 then die(string.format("none of the %d files of %s could be read (first: %s: %s)", #files,
                                     opts.input, unreadable[1].file, unreadable[1].error)) end
local score_opts = { threshold = p.cfg.prediction and p.cfg.prediction.probability_threshold }
local m = metrics.classification(probs, kept_truth, classes, score_opts)

local confusion_header, confusion_rows = breakdown.confusion(m, classes)
local class_header, class_rows = breakdown.per_class(m, classes)
local breakdowns = {}
for _, name in ipairs(by) do
    local column, values = df:column(name), {}
    for k, r in ipairs(kept) do values[k] = column[r] end
    local header, rows = breakdown.by_column(name, values, probs, kept_truth, classes, score_opts)
    breakdowns[#breakdowns + 1] = { column = name, header = header, rows = rows }
end

-- Print.
log.info("evaluate: %s on %s: %d clips scored, %d unreadable (%.1f s)", run_dir, opts.input, #kept,
         #unreadable, seconds)
log.table({ "metric", "value" }, { { "macro F1", m.f1 }, { "accuracy", m.accuracy },
                                   { "macro ROC AUC", m.roc_auc }, { "clips", #kept } })
log.info("per class")
log.table(class_header, class_rows)
log.info("confusion matrix (rows: true class, columns: predicted)")
log.table(confusion_header, confusion_rows)
for _, b in ipairs(breakdowns) do
    log.info("by %s", b.column)
    log.table(b.header, b.rows)
end
for _, u in ipairs(unreadable) do log.info("unreadable: row %d (%s): %s", u.row, u.file, u.error) end

-- Write.
if opts.out then
    sys.mkdir(opts.out)
    local function write_csv(name, header, rows)
        sys.write_file(opts.out .. "/" .. name, csv.table_text(header, rows, { digits = 6 }))
    end
    local header = { "", audio_column, "label", "predicted" }
    for _, c in ipairs(classes) do header[#header + 1] = "p_" .. c end
    header[#header + 1] = "error"
    local rows, predicted_of = {}, {}
    for k, r in ipairs(kept) do predicted_of[r] = m.predicted[k] end
    for r, res in ipairs(results) do
        local row = { ids[r], names[r], labels[r], predicted_of[r] and classes[predicted_of[r]] }
        for c = 1, #classes do row[4 + c] = res.probs and res.probs[c] end
        row[#classes + 5] = res.error
        rows[r] = row
    end
    write_csv("predictions.csv", header, rows)
    write_csv("per_class.csv", class_header, class_rows)
    write_csv("confusion.csv", confusion_header, confusion_rows)
    local by_column = {}
    for _, b in ipairs(breakdowns) do
        write_csv("breakdown_" .. b.column:gsub("[^%w_.-]", "_") .. ".csv", b.header, b.rows)
        by_column[b.column] = b.rows
    end
    sys.write_file(opts.out .. "/metrics.json", sys.json_encode({
        run = run_dir, input = opts.input, classes = classes, clips = #kept, unreadable = #unreadable,
        unreadable_files = unreadable, f1 = m.f1, accuracy = m.accuracy, roc_auc = m.roc_auc,
        roc_auc_skipped = m.roc_auc_skipped, per_class = m.per_class, confusion = m.confusion,
        breakdowns = by_column,
    }, { indent = true }) .. "\n")
    log.info("written to %s", opts.out)
end
if #unreadable > 0 then
    io.stderr:write(string.format("evaluate: %d of %d files could not be read; the scores cover the other %d\n",
                                  #unreadable, #files, #kept))
    os.exit(1)
end
