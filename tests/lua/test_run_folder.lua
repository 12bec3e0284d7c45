-- Run folders (machrt.run_folder) and the files in them: the lock, refusing
-- a folder that holds a run, names that leave output_directory, stale
-- temporary files, checkpoints and configs that were damaged or edited,
-- and no fixed temporary file name anywhere in the writers.
-- The full runs (second run, --resume, --overwrite) are in test_experiment.lua.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local train = require "machrt.train"
local infer = require "machrt.infer"
local optim = require "machrt.optim"
local pipeline = require "machrt.pipeline"
local run_folder = require "machrt.run_folder"
local schema = require "machrt.schema"

local F = require "files"
local tests, test, tmpdir, defer = F.suite()
local read, exists = F.read, F.exists

local CLASSES = { "fan", "pump" }

-- A finished 2-epoch run as train.* leaves it: config.json and a sealed
-- checkpoint of a width-4 network.
local function config()
    return {
        architecture = { backbone = "resnet18", pool = "GeM", dropout = 0, width = 4, pretrained = false },
        audio = { sample_rate = 8000, stft_window_size = 512, hop_size = 256, mel_frequency_bins = 32,
                  minimum_frequency = 50, maximum_frequency = 4000, spectrogram_normalization = "No",
                  channel = 1 },
        environment = { seed = 3 },
        prediction = { inference_chunk_method = "Fix", inference_chunk_seconds = 2,
                       max_inference_chunk_seconds = 600, metric = "F1" },
        training = { epochs = 2, learning_rate = 0.001 },
    }
end

local function state_of(epochs)
    local history = {}
    for e = 1, epochs do history[e] = { epoch = e, step = 4 * e, lr = 0.001, train_loss = 0.5 } end
    return { epoch = epochs, step = 4 * epochs, history = history, seed = 3, classes = CLASSES }
end

local function model_and_optimizer(cfg)
    mt.manual_seed(7)
    local model = pipeline.build_model(cfg.architecture, #CLASSES)
    return model, optim.AdamW(model:parameters())
end

local function make_run(dir, state)
    local cfg = config()
    local model, opt = model_and_optimizer(cfg)
    train.write_config(dir, cfg)
    train.save_checkpoint(dir, model, opt, state or state_of(2))
    return cfg
end

local function load(dir, cfg)
    local model, opt = model_and_optimizer(cfg)
    return train.load_checkpoint(dir, model, opt, { cfg = cfg, classes = CLASSES })
end

-- Runs experiments/resnet34.lua; returns its exit status and output. The
-- data has no rows (the settings check wants its files to exist): every
-- run here must be refused before it is read.
local function experiment(args)
    local no_data = tmpdir()
    sys.write_file(no_data .. "/dataset.csv", ",audio,label\n")
    return F.run("./machrt experiments/resnet34.lua --dataset.data_folder=" .. no_data
                 .. " --dataset.train_dataframe=" .. no_data .. "/dataset.csv " .. args)
end

-- A child process that takes the lock on `path`, writes its PID to
-- `pid_file` and holds the lock until the returned function is called.
local function hold_lock_in_child(path, pid_file)
    local script = string.format("local sys = require 'machrt.sys'; local l = assert(sys.lock(%q)); "
                                 .. "sys.write_file(%q, tostring(sys.pid())); io.read('a')", path, pid_file)
    local child = assert(io.popen(string.format("./machrt -e %q", script), "w"))
    for _ = 1, 200 do
        if exists(pid_file) then break end
        os.execute("sleep 0.05")
    end
    local released = false
    local function release()
        if not released then child:close() end
        released = true
    end
    defer(release)
    return math.tointeger(tonumber(read(pid_file))), release
end

test("a run folder locked by another process is refused, naming its PID", function()
    local dir, side = tmpdir(), tmpdir()
    local pid, release = hold_lock_in_child(dir .. "/run.lock", side .. "/holder.pid")
    A.truthy(pid and pid ~= sys.pid(), "the child's PID")
    A.raises(function() run_folder.open(dir, "fresh") end, "run folder " .. dir .. " is in use by process " .. pid,
             dir .. "/run.lock")
    -- The experiment itself: refused before it trains.
    local out = tmpdir()
    local fold = out .. "/x/fold4"
    sys.mkdir(fold)
    local pid_file = out .. "/holder.pid"
    local holder, release_fold = hold_lock_in_child(fold .. "/run.lock", pid_file)
    os.remove(pid_file)
    local code, text = experiment("--output_directory=" .. out .. " --experiment_name=x")
    A.truthy(code ~= 0, text)
    A.truthy(text:find("is in use by process " .. holder, 1, true), text)
    -- Once the holder ends, the folder is free.
    release()
    release_fold()
    local folder = run_folder.open(dir, "fresh")
    A.eq(folder.dir, dir)
end)

test("a fresh run into a folder that holds a run is refused, naming both options", function()
    local dir = tmpdir()
    sys.write_file(dir .. "/config.json", "{}")
    A.raises(function() run_folder.open(dir, "fresh") end, "run folder " .. dir .. " already holds a run",
             "--resume " .. dir, "--overwrite")
end)

test("experiment_name must be a single folder name", function()
    for _, bad in ipairs{ "../../x", "a/b", "..", ".", "" } do
        A.raises(function() run_folder.check_name(bad, "experiment_name") end,
                 "experiment_name must be a single folder name")
    end
    run_folder.check_name("final_machinetype_audio_classification", "experiment_name")
    local out = tmpdir()
    local code, text = experiment("--output_directory=" .. out .. "/runs --experiment_name=../../escaped")
    A.truthy(code ~= 0, text)
    A.truthy(text:find("experiment_name must be a single folder name", 1, true), text)
    A.eq(exists(out .. "/escaped"), false, "nothing written outside output_directory")
end)

test("resume removes the temporary files of dead processes and keeps live ones", function()
    local dir = tmpdir()
    make_run(dir)
    -- A PID that is gone: a shell that has exited.
    local dead = math.tointeger(tonumber(select(2, F.run("sh -c 'echo $$'"))))
    A.eq(sys.process_alive(dead), false, "pid " .. dead .. " is gone")
    local live = 1 -- init: always there (this process's own PID counts as stale: it wrote nothing yet)
    sys.mkdir(dir .. "/scorer")
    local stale = { dir .. "/checkpoint.safetensors.tmp." .. dead, dir .. "/scorer/model.safetensors.tmp." .. dead,
                    dir .. "/curves.png.tmp." .. dead, dir .. "/a.wav.tmp." .. dead .. ".3" }
    for _, p in ipairs(stale) do sys.write_file(p, "torn") end
    local kept = dir .. "/notes.tmp." .. live
    sys.write_file(kept, "a live writer's")
    A.truthy(sys.process_alive(live))
    run_folder.open(dir, "resume")
    for _, p in ipairs(stale) do A.eq(exists(p), false, p .. " removed") end
    A.truthy(exists(kept), "a temporary file of a live process stays")
    A.truthy(exists(dir .. "/checkpoint.safetensors"))
end)

test("a checkpoint with one flipped byte is refused, naming the file", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    A.truthy(load(dir, cfg), "the sealed checkpoint loads")
    local path = dir .. "/checkpoint.safetensors"
    local bytes = read(path)
    -- The last byte is tensor data: the file still parses, the model differs.
    local at = #bytes - 10
    local f = assert(io.open(path, "r+b"))
    f:seek("set", at)
    f:write(string.char(bytes:byte(at + 1) ~ 0x01))
    f:close()
    A.truthy(pcall(mt.load, path), "the damaged file still parses as safetensors")
    A.raises(function() load(dir, cfg) end, path .. " is damaged or was edited")
    A.raises(function() infer.load_run(dir) end, path .. " is damaged or was edited")
end)

test("checkpoint metadata with an impossible epoch is refused, naming the field", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    local path = dir .. "/checkpoint.safetensors"
    -- epoch = 99 after 2 epochs, resealed so that the checksum agrees.
    local tensors, meta = mt.load(path)
    local state = sys.json_decode(meta["machrt.run"])
    state.epoch = 99
    meta["machrt.run"] = sys.json_encode(state)
    mt.save(path, tensors, run_folder.seal(tensors, meta))
    A.raises(function() load(dir, cfg) end, "checkpoint " .. path, "field 'epoch' is 99, but its history holds 2 epochs")
    -- Other fields: a string step, classes that are not the data's.
    state.epoch, state.step = 2, "8"
    meta["machrt.run"] = sys.json_encode(state)
    mt.save(path, tensors, run_folder.seal(tensors, meta))
    A.raises(function() load(dir, cfg) end, "field 'step' must be a non-negative integer")
    state.step, state.classes = 8, { "fan", "valve" }
    meta["machrt.run"] = sys.json_encode(state)
    mt.save(path, tensors, run_folder.seal(tensors, meta))
    A.raises(function() load(dir, cfg) end, "field 'classes' is [fan, valve], but the data gives the classes [fan, pump]")
    -- More epochs done than training.epochs asks for.
    make_run(dir, state_of(2))
    cfg.training.epochs = 1
    A.raises(function() load(dir, cfg) end, "past training.epochs = 1", "--training.epochs=2")
end)

test("a checkpoint without a checksum is refused", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    local path = dir .. "/checkpoint.safetensors"
    local tensors, meta = mt.load(path)
    meta[run_folder.CHECKSUM] = nil
    mt.save(path, tensors, meta)
    A.raises(function() load(dir, cfg) end, path .. " has no checksum")
end)

test("a hand-edited config.json is refused naming the key: on resume and in load_run", function()
    -- A string where a number goes: refused when --resume reads it.
    local out = tmpdir()
    local dir = out .. "/x/fold4"
    sys.mkdir(dir)
    local path = dir .. "/config.json"
    local data = '"dataset": {"data_folder": "/nonexistent", "train_dataframe": "/nonexistent/dataset.csv"}'
    sys.write_file(path, '{"training": {"learning_rate": "0.5x", "epochs": 2}, ' .. data .. '}')
    local code, text = F.run("./machrt experiments/resnet34.lua --resume " .. dir)
    A.truthy(code ~= 0, text)
    A.truthy(text:find(path .. ": training.learning_rate must be a number (as its default 0.001), "
                       .. "got string '0.5x'", 1, true), text)
    A.eq(text:find("attempt to", 1, true), nil, "no Lua internals: " .. text)
    -- A key this version does not know (a typo, or a later version's): a user's error, one line.
    sys.write_file(path, '{"training": {"epoch": 2}, ' .. data .. '}')
    code, text = F.run("./machrt experiments/resnet34.lua --resume " .. dir)
    local function last_line(t) return t:match("([^\n]*)\n?$") end
    A.eq(code, 2, text)
    A.eq(last_line(text), "machrt: " .. path .. ": unknown key 'training.epoch'; valid keys of training: see --help")
    sys.write_file(path, '{"training": {"epochs": 2}, "audio_v2": {"rate": 1}, ' .. data .. '}')
    code, text = F.run("./machrt experiments/resnet34.lua --resume " .. dir)
    A.eq(code, 2, text)
    A.eq(last_line(text), "machrt: " .. path .. ": unknown key 'audio_v2' (not a setting of this experiment)")
    A.eq(text:find("traceback", 1, true), nil, "no traceback: " .. text)
    -- A value of the right type, changed after the checkpoint: the checkpoint knows.
    local run_dir = tmpdir()
    local cfg = make_run(run_dir)
    local edited = config()
    edited.audio.hop_size = 128
    sys.write_file(run_dir .. "/config.json", sys.json_encode(edited))
    A.raises(function() infer.load_run(run_dir) end, run_dir .. "/config.json was changed after checkpoint",
             "audio.hop_size is 128 there, 256 in the checkpoint's settings")
    A.raises(function() load(run_dir, edited) end, "audio.hop_size is 128 there")
    -- environment.* and training.epochs may differ.
    edited = config()
    edited.training.epochs, edited.environment.seed = 5, 9
    A.truthy(load(run_dir, edited))
    A.truthy(load(run_dir, cfg))
end)

-- The checkpoint's settings without `section.key`, sealed again as a
-- version that predates the setting sealed them.
local function predate_in_checkpoint(dir, section, key)
    local path = dir .. "/checkpoint.safetensors"
    local tensors, meta = mt.load(path)
    local trained = sys.json_decode(meta["machrt.config"])
    trained[section][key] = nil
    meta["machrt.config"] = sys.json_encode(trained)
    run_folder.seal(tensors, meta)
    mt.save(path, tensors, meta)
end

test("a setting a run predates gets the schema's earlier value, not today's default, or is refused", function()
    -- Before audio.resampler existed (commit ad5e358) every decode resampled with soxr.
    A.eq(schema.reference["audio.resampler"].before, "soxr")
    -- The earlier value, where the default says otherwise.
    local keys = schema.with{ ["audio.resampler"] = { "string", values = { "soxr", "torchaudio" }, before = "soxr" } }
    local stored = { training = { epochs = 2 } }
    local filled = run_folder.fill_absent(stored, { audio = { resampler = "torchaudio" },
                                                    training = { epochs = 5 },
                                                    environment = { threads = 2 } }, keys, "x/config.json")
    A.eq(filled, { { key = "audio.resampler", value = "soxr" } })
    A.eq(stored, { audio = { resampler = "soxr" }, training = { epochs = 2 } },
         "filled with the earlier value; resumable keys left to the command line")
    A.raises(function() run_folder.fill_absent({}, { audio = { hop_size = 256 } }, keys, "x/config.json") end,
             "x/config.json has no setting audio.hop_size: the run was written before machrt had it")
    -- A checkpoint that predates the setting, against a config.json that has it.
    local dir = tmpdir()
    local cfg = make_run(dir)
    cfg.audio.resampler = "soxr"
    A.truthy(load(dir, cfg), "the checkpoint's run resampled with soxr, as config.json says")
    cfg.audio.resampler = "torchaudio"
    A.raises(function() load(dir, cfg) end, "audio.resampler is 'torchaudio' there, 'soxr' in the checkpoint's settings")
    cfg = config()
    predate_in_checkpoint(dir, "audio", "hop_size")
    A.raises(function() load(dir, cfg) end, "checkpoint " .. dir .. "/checkpoint.safetensors (the settings it "
             .. "was trained under) has no setting audio.hop_size")
    A.raises(function() infer.load_run(dir) end, "has no setting audio.hop_size")
end)

test("a checkpoint records the config the run wrote, without reading config.json back", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    local written = read(dir .. "/config.json")
    -- An edit during the run is not taken into the next checkpoint: resume then names it.
    local edited = config()
    edited.audio.hop_size = 128
    sys.write_file(dir .. "/config.json", sys.json_encode(edited))
    local model, opt = model_and_optimizer(cfg)
    train.save_checkpoint(dir, model, opt, state_of(2))
    local _, meta = mt.load(dir .. "/checkpoint.safetensors")
    A.eq(meta["machrt.config"], written)
    A.raises(function() load(dir, edited) end, "audio.hop_size is 128 there")
    -- A model's folder inside the run folder records the run folder's config.
    train.save_checkpoint(dir .. "/model", model, opt, state_of(2))
    _, meta = mt.load(dir .. "/model/checkpoint.safetensors")
    A.eq(meta["machrt.config"], written)
end)

test("best.safetensors must be the best epoch's, as the checkpoint says", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    local model = model_and_optimizer(cfg)
    local state = state_of(2)
    state.best = { epoch = 2, value = 0.5, metric = "F1" }
    train.save_best(dir, model, 2)
    A.eq(train.load_best(dir, model, state), true)
    state.best.epoch = 1
    A.raises(function() train.load_best(dir, model, state) end, "best.safetensors holds the weights of epoch 2",
             "names epoch 1 as the best")
    A.raises(function() train.load_best(dir, model, { epoch = 2 }) end, "names no epoch as the best")
    os.remove(dir .. "/best.safetensors")
    A.raises(function() train.load_best(dir, model, state) end, "best.safetensors is missing")
    A.eq(train.load_best(dir, model, { epoch = 2 }), false)
end)

test("a scorer manifest is checked before it is used: its weights stay in the folder", function()
    local dir = tmpdir()
    local cfg = make_run(dir)
    local model = model_and_optimizer(cfg)
    local scorer = train.build_scorer(dir, cfg, model, CLASSES)
    local path = scorer .. "/manifest.json"
    local m = sys.json_decode(read(path))
    A.truthy(infer.load_scorer(scorer), "the scorer as written loads")
    m.weights.file = "../checkpoint.safetensors"
    m.weights.sha256 = sys.sha256_file(dir .. "/checkpoint.safetensors")
    sys.write_file(path, sys.json_encode(m))
    A.raises(function() infer.load_scorer(scorer) end, path .. ": field 'weights' must name a file of the scorer folder")
    m.weights.file, m.classes = "model.safetensors", { "fan", 2 }
    m.weights.sha256 = sys.sha256_file(scorer .. "/model.safetensors")
    sys.write_file(path, sys.json_encode(m))
    A.raises(function() infer.load_scorer(scorer) end, path .. ": field 'classes': entry 2 is not a name")
end)

test("a kill between the checkpoint and best.safetensors is repaired on resume", function()
    local dir = tmpdir()
    local cfg = config()
    local model, opt = model_and_optimizer(cfg)
    train.write_config(dir, cfg)
    train.save_best(dir, model, 1) -- epoch 1 was the best so far
    local state = state_of(2)
    state.best = { epoch = 2, value = 0.7, metric = "F1" } -- epoch 2 is better: killed before its best file
    train.save_checkpoint(dir, model, opt, state)
    local resumed = load(dir, cfg)
    local _, meta = mt.load(dir .. "/best.safetensors")
    A.eq(meta["machrt.best_epoch"], "2", "best.safetensors rewritten from the epoch-2 checkpoint")
    A.eq(train.load_best(dir, model_and_optimizer(cfg), resumed), true)
end)

-- Every file of the writers: C sources and Lua modules.
local function sources()
    local out = {}
    local function walk(path)
        for _, name in ipairs(sys.list_folder(path)) do
            local full = path .. "/" .. name
            if sys.stat(full).is_dir then
                walk(full)
            elseif name:match("%.c$") or name:match("%.lua$") or name:match("%.cu$") then
                out[#out + 1] = full
            end
        end
    end
    walk("runtime")
    walk("modules")
    walk("scripts")
    walk("experiments")
    return out
end

test("no writer uses a fixed temporary name: every one carries the PID", function()
    local fixed = {}
    for _, path in ipairs(sources()) do
        local n = 0
        for line in read(path):gmatch("[^\n]*") do
            n = n + 1
            -- ".tmp" closing a string: "%s.tmp", path .. ".tmp", '.tmp'.
            if line:find("%.tmp[\"']") then fixed[#fixed + 1] = path .. ":" .. n .. ": " .. line end
        end
    end
    A.eq(fixed, {}, "fixed temporary names")
    -- And what a picture writer leaves while it writes: only the PID's name.
    local dir = tmpdir()
    local plot = require "machrt.plot"
    plot.training_curves(dir .. "/curves.png", state_of(2).history)
    A.eq(sys.list_folder(dir), { "curves.png" })
end)

test("--resume with --overwrite, and an unknown mode, are refused", function()
    local code, text = F.run("./machrt experiments/resnet34.lua --resume /nowhere --overwrite")
    A.truthy(code ~= 0 and text:find("give one of them", 1, true), text)
    A.raises(function() run_folder.open(tmpdir(), "append") end, "mode must be fresh, resume or overwrite")
end)

return tests
