-- Inference: machrt.infer against a direct computation, windowed reading of
-- long files, batching across files, the scorer folder and its checksum,
-- scripts/predict.lua and bad input.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local infer = require "machrt.infer"
local pipeline = require "machrt.pipeline"
local train = require "machrt.train"
local optim = require "machrt.optim"

local F = require "files"

local tests, test, tmpdir = F.suite()

local CLASSES = { "fan", "pump", "slider", "valve" }

local function config()
    return {
        architecture = { backbone = "resnet18", pool = "GeM", dropout = 0, width = 4, pretrained = false },
        audio = { sample_rate = 8000, stft_window_size = 512, hop_size = 256, mel_frequency_bins = 32,
                  minimum_frequency = 50, maximum_frequency = 4000, spectrogram_normalization = "No",
                  channel = 1 },
        prediction = { inference_chunk_method = "Fix", inference_chunk_seconds = 2,
                       max_inference_chunk_seconds = 600 },
        dataset = { audio_column = "audio" },
    }
end

-- A run folder as training leaves it: config.json and a checkpoint, with
-- BN running statistics made non-trivial so evaluation mode matters.
local function make_run(dir)
    local cfg = config()
    mt.manual_seed(7)
    local model = pipeline.build_model(cfg.architecture, #CLASSES)
    for name, t in pairs(model:state_dict()) do
        if name:match("running_var$") then t:uniform_(0.5, 2) end
        if name:match("running_mean$") then t:uniform_(-0.5, 0.5) end
    end
    local opt = optim.AdamW(model:parameters())
    train.write_config(dir, cfg)
    train.save_checkpoint(dir, model, opt, { epoch = 1, step = 1, history = {}, classes = CLASSES })
    return cfg, model
end

local function write_wave(path, seconds, sr, seed, channels)
    mt.manual_seed(seed)
    local w = mt.randn{ channels or 1, math.floor(seconds * sr) } * 0.1
    audio.save(path, w, sr)
end

-- The reference computation, written out step by step: whole file,
-- resampled in one piece, chunks, front end, forward, sigmoid, mean.
local function direct(cfg, model, path)
    local a = cfg.audio
    local w = audio.load(path, { sample_rate = a.sample_rate })
    if w:dim() == 2 then w = w:select(1, 1):contiguous() end
    local chunks = audio.chunks(w, a.sample_rate, cfg.prediction.inference_chunk_seconds)
    local mel = audio.MelSpectrogram{ sample_rate = a.sample_rate, n_fft = a.stft_window_size,
        hop_length = a.hop_size, f_min = a.minimum_frequency, f_max = a.maximum_frequency,
        n_mels = a.mel_frequency_bins }
    local db = audio.amplitude_to_db(mel:forward(chunks))
    model:evaluate()
    local p = model:forward(db:reshape{ db:size(1), 1, db:size(2), db:size(3) }):sigmoid()
    return p:mean(1):totable(), chunks:size(1)
end

local function rel_max_of(got, want)
    return (got - want):abs():max() / math.max(want:abs():max(), 1e-12)
end

local function predict_all(p, files, batch)
    local out = {}
    infer.predict_files(p, files, { batch_chunks = batch, on_result = function(r) out[#out + 1] = r end })
    return out
end

test("predictions equal the direct computation, for any batch width", function()
    local dir = tmpdir()
    local cfg, model = make_run(dir .. "/run")
    local files = {}
    for k, secs in ipairs{ 6, 4.5, 1.2, 9 } do
        files[k] = string.format("%s/clip%d.wav", dir, k)
        write_wave(files[k], secs, 16000, k)
    end
    local p = infer.load_run(dir .. "/run")
    local ref = {}
    for k, f in ipairs(files) do ref[k] = { direct(cfg, model, f) } end
    for _, batch in ipairs{ 1, 3, 32 } do
        local got = predict_all(p, files, batch)
        A.eq(#got, #files)
        for k, r in ipairs(got) do
            A.eq(r.file, files[k], "results in input order")
            A.eq(r.chunks, ref[k][2], "chunks of " .. files[k])
            local best = 1
            for c = 1, 4 do
                A.near(r.probs[c], ref[k][1][c], 2e-5, string.format("batch %d, file %d, class %d", batch, k, c))
                if ref[k][1][c] > ref[k][1][best] then best = c end
            end
            A.eq(r.label, CLASSES[best])
        end
    end
    -- 1.2 s < one 2 s chunk: padded to one chunk; 4.5 s: two chunks, tail dropped.
    A.eq(ref[3][2], 1)
    A.eq(ref[2][2], 2)
end)

test("release_plans frees a model's inference plan; the next one is built anew from the new weights", function()
    local cfg = config()
    mt.manual_seed(3)
    local model = pipeline.build_model(cfg.architecture, #CLASSES)
    model:evaluate()
    local x = mt.randn{ 2, 1, 32, 40 }
    local net = infer.inference_net(model, "cpu")
    A.truthy(net ~= model, "the CPU runs a plan")
    A.near(rel_max_of(net:forward(x), model:forward(x)), 0, 1e-5, "plan against the model")
    A.eq(infer.inference_net(model, "cpu"), net, "kept until released")
    infer.release_plans(model)
    A.raises(function() return net:forward(x) end, "released")
    -- New weights: the new plan must follow them, not the freed one's.
    for _, t in pairs(model:state_dict()) do if t:dim() == 4 then t:mul_(0.5) end end
    local again = infer.inference_net(model, "cpu")
    A.truthy(again ~= net, "a new plan")
    A.near(rel_max_of(again:forward(x), model:forward(x)), 0, 1e-5, "the new plan has the new weights")
    infer.release_plans(model)
    infer.release_plans(model) -- nothing left: no error
end)

test("a long file read window by window matches reading it whole", function()
    local dir = tmpdir()
    local cfg, model = make_run(dir .. "/run")
    local long = dir .. "/long.wav"
    write_wave(long, 150, 16000, 3)           -- 150 s: three reading windows
    local p = infer.load_run(dir .. "/run")
    local r = predict_all(p, { long }, 16)[1]
    local ref, n = direct(cfg, model, long)
    A.eq(r.chunks, n)
    for c = 1, 4 do A.near(r.probs[c], ref[c], 1e-4, "class " .. c) end
    -- max_inference_chunk_seconds caps the audio used.
    p.max_seconds = 20
    A.eq(predict_all(p, { long }, 16)[1].chunks, 10)
end)

test("unreadable files get an error row; the others go on", function()
    local dir = tmpdir()
    make_run(dir .. "/run")
    local good, text, missing = dir .. "/good.wav", dir .. "/notes.wav", dir .. "/missing.wav"
    write_wave(good, 4, 16000, 1)
    sys.write_file(text, "this is not audio\n")
    local multi = dir .. "/multi.wav"
    write_wave(multi, 4, 16000, 2, 2)
    local nan = dir .. "/nan.wav"
    F.write_float_wav(nan, 16000, 64000, function(i) return i == 40000 and 0 / 0 or 0.01 end)
    local p = infer.load_run(dir .. "/run")
    p.channel = 3
    local got = predict_all(p, { text, good, missing, multi, nan }, 4)
    A.eq(#got, 5)
    A.truthy(got[1].error and got[1].error:find("notes.wav", 1, true), tostring(got[1].error))
    A.truthy(got[2].probs and not got[2].error, "the good file is predicted")
    A.truthy(got[3].error and got[3].error:find("missing.wav", 1, true), tostring(got[3].error))
    A.truthy(got[4].error and got[4].error:find("audio.channel = 3", 1, true), tostring(got[4].error))
    A.truthy(got[5].error and got[5].error:find("nan.wav is corrupt: sample NaN at frame 40000", 1, true),
             "a NaN sample makes the file unreadable, not a prediction of nan: " .. tostring(got[5].error))
    A.eq(got[5].probs, nil)
    local row = infer.csv_row(p, got[1])
    A.truthy(row:match("^[^,]+,,,,,,,"), "an error row has empty label and probabilities: " .. row)
end)

test("a run folder without a checkpoint is a clear error", function()
    local dir = tmpdir()
    A.raises(function() infer.load_run(dir) end, "has no config.json")
    train.write_config(dir, config())
    A.raises(function() infer.load_run(dir) end, "has no checkpoint")
    sys.write_file(dir .. "/checkpoint.safetensors", "garbage")
    A.raises(function() infer.load_run(dir) end, "cannot be read")
    -- A config.json that is JSON but not an object of sections.
    for _, text in ipairs({ "[1, 2]", "5", '"resnet34"', "null" }) do
        sys.write_file(dir .. "/config.json", text)
        A.raises(function() infer.load_run(dir) end, dir .. "/config.json", "not a config")
    end
end)

test("the scorer predicts alone and refuses weights that fail the checksum", function()
    local dir = tmpdir()
    local cfg, model = make_run(dir .. "/run")
    local scorer = train.build_scorer(dir .. "/run", cfg, model, CLASSES)
    -- Moved away from the run: it needs nothing else.
    os.execute(string.format("mv '%s' '%s/packed'", scorer, dir))
    local clip = dir .. "/clip.wav"
    write_wave(clip, 4, 16000, 9)
    local pipe = io.popen(string.format("./machrt '%s/packed/score.lua' '%s' 2>/dev/null", dir, clip))
    local out = pipe:read("a")
    pipe:close()
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    A.eq(lines[1], "file,label,p_fan,p_pump,p_slider,p_valve,chunks,error")
    local ref = direct(cfg, model, clip)
    local probs = {}
    for v in lines[2]:gmatch(",([%d%.]+)") do probs[#probs + 1] = tonumber(v) end
    for c = 1, 4 do A.near(probs[c], ref[c], 1e-5, "class " .. c) end
    -- One changed byte in the weights: refused, naming the checksum.
    local w = dir .. "/packed/model.safetensors"
    local f = assert(io.open(w, "r+b"))
    f:seek("end", -3)
    local b = f:read(1)
    f:seek("end", -3)
    f:write(string.char((b:byte() + 1) % 256))
    f:close()
    A.raises(function() infer.load_scorer(dir .. "/packed") end, "does not match its manifest checksum")
    A.raises(function() infer.load_scorer(dir) end, "has no manifest.json")
end)

test("predict.lua writes its CSV whole, or not at all", function()
    local dir = tmpdir()
    make_run(dir .. "/run")
    sys.mkdir(dir .. "/clips/a")
    write_wave(dir .. "/clips/a/one.wav", 3, 16000, 1)
    write_wave(dir .. "/clips/two.wav", 5, 16000, 2)
    sys.write_file(dir .. "/clips/readme.txt", "skipped: not an audio extension\n")
    local function run(args) return F.run("./machrt scripts/predict.lua " .. args) end
    local code, out = run(string.format("--run %s/run --input %s/clips --out %s/pred.csv", dir, dir, dir))
    A.eq(code, 0, out)
    A.truthy(out:find("2 files", 1, true), out)
    local csv = F.read(dir .. "/pred.csv")
    A.truthy(csv:find("clips/a/one.wav,", 1, true) and csv:find("clips/two.wav,", 1, true), csv)
    code, out = run(string.format("--run %s/run --input %s/clips --out %s/no/such/folder/p.csv", dir, dir, dir))
    A.truthy(code ~= 0, "an unwritable output fails")
    A.truthy(out:find("no/such/folder/p.csv", 1, true), out)
    code, out = run(string.format("--run %s/nothing --input %s/clips", dir, dir))
    A.truthy(code ~= 0)
    A.truthy(out:find("no config.json", 1, true), out)
    code, out = run(string.format("--run %s/run", dir))
    A.truthy(code ~= 0 and out:find("--input", 1, true), out)
end)

test("predict.lua with a CSV input: the CSV's own index comes first, so the rows join back onto it", function()
    local dir = tmpdir()
    make_run(dir .. "/run")
    write_wave(dir .. "/one.wav", 3, 16000, 1)
    write_wave(dir .. "/two.wav", 3, 16000, 2)
    sys.write_file(dir .. "/bad.wav", "this is not audio\n")
    -- An index as pandas writes it (not the row positions), and a CSV without one.
    sys.write_file(dir .. "/indexed.csv", ",audio,label\n17,two.wav,fan\n4,bad.wav,pump\n9,one.wav,fan\n")
    sys.write_file(dir .. "/plain.csv", "audio\none.wav\ntwo.wav\n")
    local code, out = F.run(string.format("./machrt scripts/predict.lua --run %s/run --input %s/indexed.csv "
                                          .. "--out %s/pred.csv", dir, dir, dir))
    A.eq(code, 1, "one unreadable file; output:\n" .. out)
    local rows = F.csv_rows(dir .. "/pred.csv")
    A.eq(rows[1][1], "", "an unnamed first column, as pandas writes an index")
    A.eq(rows[1][2], "file", "the path stays")
    local joined = {}
    for i = 2, #rows do joined[rows[i][1]] = rows[i][2] end
    A.eq(joined, { ["17"] = dir .. "/two.wav", ["4"] = dir .. "/bad.wav", ["9"] = dir .. "/one.wav" })
    -- No index column: pandas' default index, the 0-based positions.
    code, out = F.run(string.format("./machrt scripts/predict.lua --run %s/run --input %s/plain.csv "
                                    .. "--out %s/pred.csv", dir, dir, dir))
    A.eq(code, 0, out)
    rows = F.csv_rows(dir .. "/pred.csv")
    A.eq({ rows[2][1], rows[2][2], rows[3][1], rows[3][2] }, { "0", dir .. "/one.wav", "1", dir .. "/two.wav" })
    -- Files given directly keep the layout without an index column.
    code, out = F.run(string.format("./machrt scripts/predict.lua --run %s/run --input %s/one.wav", dir, dir))
    A.eq(code, 0, out)
    A.truthy(out:find("file,label,", 1, true) and not out:find(",file,label,", 1, true), out)
end)

test("predict.lua and a scorer's score.lua exit 1 and say how many inputs were unreadable", function()
    local dir = tmpdir()
    local cfg, model = make_run(dir .. "/run")
    local scorer = train.build_scorer(dir .. "/run", cfg, model, CLASSES)
    local good, bad = dir .. "/good.wav", dir .. "/bad.wav"
    write_wave(good, 3, 16000, 1)
    sys.write_file(bad, "this is not audio\n")
    local code, out = F.run(string.format("./machrt scripts/predict.lua --run %s/run --input %s --input %s "
                                          .. "--out %s/pred.csv", dir, good, bad, dir))
    A.eq(code, 1, "some inputs unreadable: exit status 1; output:\n" .. out)
    A.truthy(out:find("predict: 1 of 2 files could not be read", 1, true), out)
    A.truthy(F.read(dir .. "/pred.csv"):find("bad.wav", 1, true), "the CSV is still written")
    code, out = F.run(string.format("./machrt scripts/predict.lua --run %s/run --input %s", dir, good))
    A.eq(code, 0, out)
    code, out = F.run(string.format("./machrt '%s/score.lua' '%s' '%s' '%s'", scorer, good, bad, bad))
    A.eq(code, 1, "score.lua: exit status 1; output:\n" .. out)
    A.truthy(out:find("score: 2 of 3 files could not be read", 1, true), out)
    A.truthy(out:find("\n" .. good .. ",", 1, true), "the readable file is still predicted: " .. out)
    code, out = F.run(string.format("./machrt '%s/score.lua' '%s'", scorer, good))
    A.eq(code, 0, out)
end)

test("--help prints the usage and exits 0; usage errors are one line and exit 2", function()
    local dir = tmpdir()
    local cfg, model = make_run(dir .. "/run")
    local scorer = train.build_scorer(dir .. "/run", cfg, model, CLASSES)
    for _, cmd in ipairs{ "./machrt scripts/predict.lua --help", "./machrt scripts/predict.lua --run x --help",
                          "./machrt '" .. scorer .. "/score.lua' --help" } do
        local code, out = F.run(cmd)
        A.eq(code, 0, cmd .. ": " .. out)
        A.truthy(out:find("^usage: machrt "), cmd .. ": " .. out)
    end
    for cmd, says in pairs{
        ["./machrt scripts/predict.lua --run"] = "predict: --run needs a value",
        ["./machrt scripts/predict.lua --run x --input y --batch 0"] = "predict: --batch needs an integer",
        ["./machrt scripts/predict.lua --speed 2"] = "predict: unknown option --speed",
        ["./machrt '" .. scorer .. "/score.lua'"] = "score: give at least one audio file",
        ["./machrt '" .. scorer .. "/score.lua' --fast a.wav"] = "score: unknown option --fast",
    } do
        local code, out = F.run(cmd)
        A.eq(code, 2, cmd .. ": " .. out)
        A.truthy(out:find(says, 1, true), cmd .. ": " .. out)
        A.eq(select(2, out:gsub("\n", "")), 1, cmd .. ": one line, no traceback: " .. out)
    end
end)

return tests
