-- Predicts machine types of audio files with a trained run or a scorer, or
-- anomaly scores and decisions with an anomaly run (the usage below). Every
-- file goes through the training front end; `Fix` chunks of
-- inference_chunk_seconds (at most max_inference_chunk_seconds of a file),
-- the mean of the chunks' sigmoid outputs and its argmax. A file that cannot
-- be read gets a row with the reason in the error column; the run goes on
-- and exits with status 1 at the end, saying how many. Long files are read
-- window by window.

local mt = require "machrt"
local sys = require "machrt.sys"
local infer = require "machrt.infer"
local pipeline = require "machrt.pipeline"
local audio = require "machrt.audio"
local data = require "machrt.data"
local csv = require "machrt.data.csv"
local log = require "machrt.log"
local cli = require "machrt.cli"

local CLI = {
    name = "predict",
    usage = [[
usage: machrt scripts/predict.lua (--run DIR | --scorer DIR) --input PATH [--input PATH ...] [options]

  machrt scripts/predict.lua --run runs/<experiment>/fold4 --input <file | folder | csv> [--out predictions.csv]
  machrt scripts/predict.lua --scorer runs/<experiment>/fold4/scorer --input clips/
  machrt scripts/predict.lua --run runs/anomaly_detection/fold4 --input clips.csv   (anomaly runs)

  --run DIR          a training run folder (config.json + checkpoint.safetensors)
  --scorer DIR       or a scorer folder (manifest.json + checked weights)
  --input PATH       an audio file, a folder (searched recursively for audio
                     files), or a CSV with an audio column (repeatable)
  --column NAME      the CSV's audio column (default: the run's dataset.audio_column)
  --data-folder DIR  where a CSV's relative paths start (default: the CSV's folder)
  --out FILE         the predictions CSV (default: printed to stdout);
                     written whole under its name only at the end
  --batch N          chunks per forward pass (default 32)
  --threads N        compute threads (default: all cores)
  --device D         auto (default: cuda when mt.cuda_available()), cpu or cuda;
                     on cuda the front end and the model run on the GPU
  --machine M        anomaly runs and scorers: the machine (TYPE/id_NN) of every
                     input; a CSV's label and model_id columns give it per file,
                     and without either the embedding detector names it itself
  --help             this text

Exit status: 0 when every file was predicted, 1 when some could not be read
(their rows hold the reason), 2 for a usage error.
]],
    options = { run = "value", scorer = "value", input = "list", column = "value", ["data-folder"] = "value",
                out = "value", batch = "value", threads = "value", device = "value",
                machine = "value" },
}
local function usage(msg) cli.fail(CLI, msg) end

local opts = cli.parse(arg, CLI)
opts.inputs = opts.input
if not opts.run == not opts.scorer then usage("give one of --run or --scorer") end
if #opts.inputs == 0 then usage("give at least one --input") end
local threads = cli.integer(CLI, opts, "threads", 1)
if threads then mt.set_num_threads(threads) end
local batch = cli.integer(CLI, opts, "batch", 1) or 32

local t0 = mt.clock()
local ok, device = pcall(pipeline.resolve_device, opts.device or "auto", "--device")
if not ok then usage(device) end
-- An anomaly run or scorer (experiments/anomaly.lua) gives scores and decisions.
local detector = require "machrt.anomaly.detector"
local anomaly = (opts.run and sys.stat(opts.run:gsub("/$", "") .. "/" .. detector.INFO))
    or (opts.scorer and detector.is_scorer(opts.scorer))
local p = anomaly and (opts.run and detector.load_run(opts.run, { device = device })
                       or detector.load_scorer(opts.scorer, { device = device }))
    or opts.run and infer.load_run(opts.run, { device = device })
    or infer.load_scorer(opts.scorer, { device = device })
local load_seconds = mt.clock() - t0

-- Inputs -> the list of files, in a stable order.
local AUDIO = { wav = true, flac = true, ogg = true, aiff = true, aif = true, au = true, w64 = true, caf = true }
local files, file_machine, file_id = {}, {}, {}
for _, input in ipairs(opts.inputs) do
    local st = sys.stat(input)
    if not st then usage("--input " .. input .. " does not exist") end
    if st.is_dir then
        local found = {}
        local pipe = assert(io.popen("find '" .. input:gsub("'", "'\\''") .. "' -type f | LC_ALL=C sort"))
        for path in pipe:lines() do
            local ext = path:match("%.([%w]+)$")
            if ext and AUDIO[ext:lower()] then found[#found + 1] = path end
        end
        pipe:close()
        if #found == 0 then usage("--input " .. input .. " holds no audio files") end
        table.move(found, 1, #found, #files + 1, files)
    elseif input:lower():match("%.csv$") then
        local df = data.read_csv(input)
        local column = opts.column or (p.cfg.dataset and p.cfg.dataset.audio_column) or "audio"
        df:require_columns({ column }, "--column")
        local base = opts["data-folder"] or input:match("^(.*)/[^/]*$") or "."
        local machines = anomaly and detector.machines_of(df, p.cfg)
        local ids = data.index_ids(df)
        for k, f in ipairs(df:column(column)) do
            files[#files + 1] = f:sub(1, 1) == "/" and f or base .. "/" .. f
            file_id[#files] = ids[k]
            if machines then file_machine[#files] = machines[k] end
        end
    else
        files[#files + 1] = input
    end
end

-- With a CSV among the inputs, the first column is that CSV's own index
-- (empty header, as pandas writes it; empty for files given otherwise), so
-- the predictions join back onto it as val_predictions.csv does.
local indexed = next(file_id) ~= nil
local function line_of(text, k)
    if not indexed then return text end
    return csv.row_text({ k and file_id[k] or "" }) .. "," .. text
end

if anomaly then
    local lines = { line_of(detector.csv_header()) }
    local unreadable, multi_channel = 0, 0
    for k, f in ipairs(files) do
        local r = detector.score_file_safe(p, f, file_machine[k] or opts.machine)
        if r.error then unreadable = unreadable + 1 end
        local read, info = pcall(audio.info, f)
        if read and info.channels > 1 then multi_channel = multi_channel + 1 end
        lines[#lines + 1] = line_of(detector.csv_row(r), k)
    end
    if multi_channel > 0 then
        io.stderr:write(string.format("predict: %d of the %d files have several channels: channel %d (the "
                                      .. "detector's audio.channel) is scored, the others are not\n", multi_channel,
                                      #files, p.cfg.audio.channel or 1))
    end
    local text = table.concat(lines, "\n") .. "\n"
    if opts.out then sys.write_file(opts.out, text) else io.write(text) end
    if unreadable > 0 then
        io.stderr:write(infer.unreadable_line("predict", unreadable, #files))
        os.exit(1)
    end
    os.exit(0)
end

local lines = { line_of(infer.csv_header(p)) }
local bar = log.progress{ title = "predict", total = #files, fields = {}, unit = "files", stream = io.stderr }
local audio_seconds, errors = 0, 0
infer.predict_files(p, files, {
    batch_chunks = batch,
    on_result = function(r) -- in input order
        lines[#lines + 1] = line_of(infer.csv_row(p, r), #lines)
        if r.error then errors = errors + 1 else audio_seconds = audio_seconds + r.seconds end
    end,
    progress = function(done) bar:update(done, {}, 1) end,
})
local seconds = bar:finish()
local text = table.concat(lines, "\n") .. "\n"
if opts.out then sys.write_file(opts.out, text) else io.write(text) end
io.stderr:write(string.format(
    "predict: %d files (%d unreadable), %.0f s of audio in %.2f s: %.1f files/s, %.0f audio-s/s "
    .. "(model loaded in %.3f s, on %s)%s\n", #files, errors, audio_seconds, seconds, #files / seconds,
    audio_seconds / seconds, load_seconds, p.device, opts.out and (", written to " .. opts.out) or ""))
if errors > 0 then
    io.stderr:write(infer.unreadable_line("predict", errors, #files))
    os.exit(1)
end
