-- machrt.interpret: a hand-built evaluation (3 classes, 6 clips) over a tiny
-- synthetic corpus; the confusion matrix, per-class scores and worst-clip
-- ranking equal values computed by hand, pictures exist and are not blank,
-- the index page names everything and renders (headless chromium when
-- installed), and a clip that vanished gives a row with the reason.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local plot = require "machrt.plot"
local interpret = require "machrt.interpret"

local F = require "files"

local T, test, tmpdir = F.suite()
local read, exists = F.read, F.exists

local csv_rows = F.csv_rows

local CLASSES = { "fan", "pump", "slider" }

-- Six validation clips over the corpus' first files (dataset.csv rows
-- 1..8: fan, pump, slider, valve, fan, pump, slider, valve). The val split
-- holds items in CSV order except that the first two are swapped, so the
-- tie-break by row is not just the item order.
--   probs row (k)  item  csv row  true    probs (fan, pump, slider)  predicted  p_true
--   1              1     2        pump    0.20 0.70 0.10             pump       0.70
--   2              2     1        fan     0.30 0.60 0.10             pump       0.30
--   3              3     3        slider  0.10 0.20 0.70             slider     0.70
--   4              4     5        fan     0.80 0.10 0.10             fan        0.80
--   5              5     6        pump    0.50 0.30 0.20             fan        0.30
--   6              6     7        slider  0.40 0.50 0.10             pump       0.10
local PROBS = {
    { 0.20, 0.70, 0.10 }, { 0.30, 0.60, 0.10 }, { 0.10, 0.20, 0.70 },
    { 0.80, 0.10, 0.10 }, { 0.50, 0.30, 0.20 }, { 0.40, 0.50, 0.10 },
}
local TRUE = { 2, 1, 3, 1, 2, 3 }

local function fixture(opts)
    opts = opts or {}
    local data = tmpdir()
    require("machrt.synth").generate(data, { clips = 8, seed = 4, channels = opts.channels })
    local files = { "pump/id_00/normal/00000000.wav", "fan/id_00/normal/00000000.wav",
                    "slider/id_00/normal/00000000.wav", "fan/id_02/normal/00000000.wav",
                    "pump/id_02/abnormal/00000000.wav", "slider/id_02/normal/00000000.wav" }
    -- The CSV's own index: 100 + its row, so neither 0..n-1 nor the row numbers.
    local ids = { "102", "101", "103", "105", "106", "107" }
    local model_ids = { "00", "00", "00", "02", "02", "02" }
    local conditions = { "normal", "normal", "normal", "normal", "abnormal", "normal" }
    local df_rows = {}
    for k, f in ipairs(files) do
        df_rows[k] = { ids[k], f, f:match("^[^/]+"), model_ids[k], conditions[k], "sum" .. k, tostring(k) }
    end
    local df = require("machrt.data.frame").new(
        { "Unnamed: 0", "audio", "label", "model_id", "condition", "sha256", "__row" }, df_rows)
    local val = { files = files, rows = { 2, 1, 3, 5, 6, 7 }, ids = ids, df = df }
    local ev = { probs = mt.tensor(PROBS), items = { 1, 2, 3, 4, 5, 6 }, true_index = TRUE,
                 loss = 0.42, skipped = {} }
    local history = {
        { epoch = 1, step = 3, lr = 5e-4, train_loss = 0.7, val_loss = 0.6, val_f1 = 0.3,
          val_accuracy = 0.4, val_roc_auc = 0.5, seconds = 1.5, samples_per_second = 20 },
        { epoch = 2, step = 6, lr = 0.0, train_loss = 0.5, val_loss = 0.42, val_f1 = 0.5,
          val_accuracy = 0.5, val_roc_auc = 0.7, seconds = 1.4, samples_per_second = 21 },
    }
    -- A small front end keeps the test fast; the layout is the reference's.
    local cfg = { experiment_name = "interp_test",
                  audio = { sample_rate = 16000, stft_window_size = 1024, hop_size = 256,
                            mel_frequency_bins = 64, minimum_frequency = 50, maximum_frequency = 8000,
                            channel = 1 },
                  prediction = { max_inference_chunk_seconds = 600 } }
    local run = tmpdir()
    return run, { classes = CLASSES, evaluation = ev, val = val, data_folder = data, history = history,
                  cfg = cfg, number_of_audios = opts.number_of_audios or 3 }
end

test("confusion matrix and per-class scores equal the hand-computed ones", function()
    local run, o = fixture{ number_of_audios = 0 }
    interpret.write(run, o)
    local d = run .. "/interpretations"
    -- rows true, columns predicted
    --   fan:    k2 -> pump, k4 -> fan         => 1 0... fan row {1, 1, 0}
    --   pump:   k1 -> pump, k5 -> fan         => {1, 1, 0}
    --   slider: k3 -> slider, k6 -> pump      => {0, 1, 1}
    A.eq(csv_rows(d .. "/confusion.csv"), {
        { "true \\ predicted", "fan", "pump", "slider" },
        { "fan", "1", "1", "0" }, { "pump", "1", "1", "0" }, { "slider", "0", "1", "1" },
    })
    -- predicted counts: fan 2, pump 3, slider 1
    -- fan:    P 1/2, R 1/2, F1 1/2;  pump: P 1/3, R 1/2, F1 2/5;  slider: P 1, R 1/2, F1 2/3
    local rows = csv_rows(d .. "/per_class.csv")
    A.eq(rows[1], { "class", "precision", "recall", "f1", "support" })
    local expect = { { "fan", 1 / 2, 1 / 2, 1 / 2, 2 }, { "pump", 1 / 3, 1 / 2, 2 / 5, 2 },
                     { "slider", 1, 1 / 2, 2 / 3, 2 } }
    A.eq(#rows, 4)
    for c, e in ipairs(expect) do
        A.eq(rows[c + 1][1], e[1])
        for j = 2, 5 do A.near(tonumber(rows[c + 1][j]), e[j], 1e-5, e[1] .. " column " .. j) end
    end
end)

test("worst.csv ranks by p_true, ties by CSV row; number_of_audios caps the pictures", function()
    local run, o = fixture{ number_of_audios = 2 }
    local written = interpret.write(run, o)
    local d = run .. "/interpretations"
    local rows = csv_rows(d .. "/worst.csv")
    A.eq(rows[1], { "rank", "index", "file", "label", "predicted", "p_true", "p_fan", "p_pump", "p_slider",
                    "picture" })
    -- p_true: 0.10 (row 7); 0.30 (rows 1 and 6: row 1 first); 0.70 (rows 2 and 3); 0.80 (row 5);
    -- each shown by its id in the CSV's own index (100 + row)
    local order = {}
    for r = 2, #rows do order[#order + 1] = tonumber(rows[r][2]) end
    A.eq(order, { 107, 101, 106, 102, 103, 105 })
    A.eq(rows[2], { "1", "107", "slider/id_02/normal/00000000.wav", "slider", "pump", "0.1", "0.4", "0.5", "0.1",
                    "worst_1.png" })
    A.eq(rows[3][10], "worst_2.png")
    A.eq(rows[4][10], "", "no picture past number_of_audios")
    A.truthy(exists(d .. "/worst_1.png") and exists(d .. "/worst_2.png"))
    A.truthy(not exists(d .. "/worst_3.png"), "number_of_audios = 2 draws two pictures")
    for _, name in ipairs { "confusion.csv", "confusion.png", "confusion_normalized.png", "per_class.csv",
                            "worst.csv", "worst_1.png", "worst_2.png" } do
        local found = false
        for _, p in ipairs(written) do found = found or p == d .. "/" .. name end
        A.truthy(found, name .. " is listed among the files written")
    end
    for _, p in ipairs(written) do A.truthy(exists(p), p .. " exists") end
end)

test("pictures have a plausible size and the spectrogram is not blank", function()
    local run, o = fixture{ number_of_audios = 1 }
    interpret.write(run, o)
    local d = run .. "/interpretations"
    for _, name in ipairs { "confusion.png", "confusion_normalized.png", "worst_1.png" } do
        local info = plot.png_info(d .. "/" .. name)
        A.truthy(info.width >= 400 and info.height >= 300, name .. " is " .. info.width .. " x " .. info.height)
        A.truthy(info.colors > 50, name .. " has " .. info.colors .. " colours")
    end
    -- a blank or flat spectrogram would have a handful of colours
    local spec = plot.png_info(d .. "/worst_1.png")
    A.truthy(spec.colors > 400, "the spectrogram has " .. spec.colors .. " colours")
    -- curves.png was absent, so it is drawn from the history
    A.truthy(plot.png_info(run .. "/curves.png").colors > 50)
    for name in io.popen("ls '" .. d .. "'"):lines() do
        A.truthy(not name:match("%.tmp"), "no temporary file left: " .. name)
    end
end)

test("an existing curves.png is kept", function()
    local run, o = fixture{ number_of_audios = 0 }
    sys.write_file(run .. "/curves.png", "kept")
    local written = interpret.write(run, o)
    A.eq(read(run .. "/curves.png"), "kept")
    for _, p in ipairs(written) do A.truthy(p ~= run .. "/curves.png", "curves.png is not rewritten") end
end)

test("index.html names the classes and every picture", function()
    local run, o = fixture{ number_of_audios = 2 }
    interpret.write(run, o)
    local html = read(run .. "/index.html")
    for _, c in ipairs(CLASSES) do A.truthy(html:find(">" .. c .. "<", 1, true), "class " .. c) end
    for _, f in ipairs { "curves.png", "interpretations/confusion.png", "interpretations/confusion_normalized.png",
                         "interpretations/worst_1.png", "interpretations/worst_2.png" } do
        A.truthy(html:find('src="' .. f .. '"', 1, true), "image " .. f)
    end
    A.truthy(html:find("interp_test", 1, true), "experiment name")
    A.truthy(html:find("Epoch log", 1, true) and html:find("Per-class scores", 1, true))
    A.truthy(html:find("slider/id_02/normal/00000000.wav", 1, true), "worst clip file")
end)

test("breakdown tables per model_id and condition equal the hand-computed ones", function()
    local run, o = fixture{ number_of_audios = 0 }
    interpret.write(run, o)
    local d = run .. "/interpretations"
    -- model_id 00: k1 right, k2 wrong, k3 right; F1 fan 0, pump 2/3, slider 1 -> 5/9
    -- model_id 02: k4 right, k5 wrong, k6 wrong; F1 fan 2/3, pump 0, slider 0 -> 2/9
    local rows = csv_rows(d .. "/breakdown_model_id.csv")
    A.eq(rows[1], { "model_id", "clips", "errors", "accuracy", "f1" })
    local expect = { { "00", 3, 1, 2 / 3, 5 / 9 }, { "02", 3, 2, 1 / 3, 2 / 9 } }
    A.eq(#rows, 3)
    for r, e in ipairs(expect) do
        A.eq(rows[r + 1][1], e[1])
        for j = 2, 5 do A.near(tonumber(rows[r + 1][j]), e[j], 1e-5, e[1] .. " column " .. j) end
    end
    -- condition: abnormal is k5 alone (wrong); normal the other five, two wrong (k2, k6)
    rows = csv_rows(d .. "/breakdown_condition.csv")
    A.eq({ rows[2][1], rows[2][2], rows[2][3], rows[2][4] }, { "abnormal", "1", "1", "0" })
    A.eq({ rows[3][1], rows[3][2], rows[3][3], tonumber(rows[3][4]) }, { "normal", "5", "2", 0.6 })
    A.truthy(not exists(d .. "/breakdown_audio.csv") and not exists(d .. "/breakdown_label.csv")
             and not exists(d .. "/breakdown___row.csv"), "no breakdown by audio, label or machrt's columns")
    A.truthy(not exists(d .. "/breakdown_sha256.csv"), "no breakdown by a column that names each clip")
    local html = read(run .. "/index.html")
    A.truthy(html:find("<h2>Validation scores by model_id</h2>", 1, true), "model_id table")
    A.truthy(html:find("<h2>Validation scores by condition</h2>", 1, true), "condition table")
    A.truthy(html:find("<th>model_id</th><th>clips</th><th>errors</th><th>accuracy</th><th>f1</th>", 1, true))
end)

test("the worst clips play in the page: <audio> elements whose files exist", function()
    local run, o = fixture{ number_of_audios = 2 }
    interpret.write(run, o)
    local html = read(run .. "/index.html")
    local srcs = {}
    for src in html:gmatch('<audio controls[^>]* src="([^"]+)"') do srcs[#srcs + 1] = src end
    A.eq(srcs, { "interpretations/worst_1.wav", "interpretations/worst_2.wav" })
    local audio = require "machrt.audio"
    for _, src in ipairs(srcs) do
        A.truthy(exists(run .. "/" .. src), src .. " exists beside the page")
        -- As the model heard it: one channel at the run's rate, the clip's 10 s.
        local info = audio.info(run .. "/" .. src)
        A.eq({ info.channels, info.sample_rate, info.frames }, { 1, 16000, 160000 }, src)
    end
end)

test("spectrogram axes: frequency in Hz on the mel-spaced axis, time in seconds", function()
    local run, o = fixture{ number_of_audios = 1 }
    interpret.write(run, o)
    local html = read(run .. "/index.html")
    A.truthy(html:find("log-mel spectrogram, frequency (Hz, mel-spaced) against time (s)", 1, true), "caption")
    -- HTK mel of 50 and 8000 Hz, 64 bands: band b is centred at mel(50) + b * step.
    local function mel(hz) return 2595 * math.log(1 + hz / 700) / math.log(10) end
    local step = (mel(8000) - mel(50)) / 65
    local range, ticks = interpret.frequency_axis(o.cfg.audio)
    A.near(range[1], mel(50) + 0.5 * step, 1e-9)
    A.near(range[2], mel(50) + 64.5 * step, 1e-9)
    local labels = {}
    for k, t in ipairs(ticks) do
        labels[k] = t[2]
        A.near(t[1], mel(tonumber(t[2])), 1e-9, t[2] .. " Hz")
    end
    A.eq(labels, { "100", "250", "500", "1000", "2000", "4000" })
    -- The picture draws exactly those labels on its frequency axis.
    local png = tmpdir() .. "/axes.png"
    local layout = plot.heatmap(png, mt.rand{ 64, 40 }, { origin = "lower", xrange = { 0, 10 }, yrange = range,
                                                          yticks_at = ticks, ylabel = "frequency (Hz)" })
    A.eq(layout.ticks.y, labels)
    A.eq(layout.ticks.x[1], "0")
    A.raises(function() plot.heatmap(png, mt.rand{ 4, 4 }, { yticks_at = ticks }) end, "yticks_at needs yrange")
end)

test("spectrogram axes follow the filterbank's mel scale: htk and slaney (the anomaly run's)", function()
    local pipeline = require "machrt.pipeline"
    for _, scale in ipairs{ "htk", "slaney" } do
        local a = { sample_rate = 16000, stft_window_size = 1024, hop_size = 512, mel_frequency_bins = 128,
                    minimum_frequency = 0, maximum_frequency = 8000, mel_scale = scale, mel_norm = "slaney" }
        -- Each band's centre frequency from the filterbank itself (checked against
        -- torchaudio in test_audio_spectral): its peak bin.
        local fb = pipeline.mel_spectrogram(a):filterbank()
        local bin_hz = a.sample_rate / a.stft_window_size
        local function centre_hz(b)
            local column = fb:select(2, b):contiguous():totable()
            local best = 1
            for k, w in ipairs(column) do if w > column[best] then best = k end end
            return (best - 1) * bin_hz
        end
        local range, ticks = interpret.frequency_axis(a)
        local step = (range[2] - range[1]) / a.mel_frequency_bins
        A.truthy(#ticks >= 5, scale .. ": ticks")
        for _, t in ipairs(ticks) do
            local hz, band = tonumber(t[2]), (t[1] - range[1]) / step + 0.5
            local below, above = math.max(1, math.floor(band)), math.min(a.mel_frequency_bins, math.ceil(band))
            A.truthy(centre_hz(below) <= hz + bin_hz and centre_hz(above) >= hz - bin_hz,
                     string.format("%s: the %d Hz tick at band %.2f lies between bands centred at %g and %g Hz",
                                   scale, hz, band, centre_hz(below), centre_hz(above)))
        end
        if scale == "slaney" then
            -- librosa.hz_to_mel (slaney): 100 Hz -> 1.5, 1000 Hz -> 15 (its documented break point).
            A.near(ticks[1][1], 1.5, 1e-9, "100 Hz")
            for _, t in ipairs(ticks) do if t[2] == "1000" then A.near(t[1], 15, 1e-9, "1000 Hz") end end
        end
    end
end)

test("clip_picture, shared with the anomaly pages: a missing file is the reason", function()
    local a = { sample_rate = 16000, stft_window_size = 1024, hop_size = 512, mel_frequency_bins = 32,
                minimum_frequency = 0, maximum_frequency = 8000, channel = 1 }
    local dir = tmpdir()
    A.raises(function() interpret.clip_picture(dir .. "/x.png", dir .. "/gone.wav", a, { title = "t" }) end,
             "file not found: " .. dir .. "/gone.wav")
    A.eq(exists(dir .. "/x.png"), false, "no picture")
end)

test("a clip that cannot be read gives a row with the reason, not a crash", function()
    local run, o = fixture{ number_of_audios = 3 }
    os.remove(o.data_folder .. "/slider/id_02/normal/00000000.wav") -- the worst clip
    local f = assert(io.open(o.data_folder .. "/fan/id_00/normal/00000000.wav", "wb"))
    f:write("RIFF but not a wave")                                   -- the second worst: damaged
    f:close()
    local written = interpret.write(run, o)
    local d = run .. "/interpretations"
    local rows = csv_rows(d .. "/worst.csv")
    A.truthy(rows[2][10]:find("no picture: file not found", 1, true), rows[2][10])
    A.truthy(rows[3][10]:find("no picture:", 1, true), rows[3][10])
    A.eq(rows[4][10], "worst_3.png")
    A.truthy(not exists(d .. "/worst_1.png") and not exists(d .. "/worst_2.png"))
    A.truthy(exists(d .. "/worst_3.png"))
    local html = read(run .. "/index.html")
    A.truthy(html:find("no picture: file not found", 1, true), "the page says why")
    A.truthy(not html:find("worst_1.png", 1, true))
    A.truthy(#written > 0)
end)

test("multi-channel files: the configured channel is drawn; a missing one is the reason", function()
    local run, o = fixture{ number_of_audios = 2, channels = 8 }
    o.cfg.audio.channel = 3
    interpret.write(run, o)
    local rows = csv_rows(run .. "/interpretations/worst.csv")
    A.eq({ rows[2][10], rows[3][10] }, { "worst_1.png", "worst_2.png" })
    o.cfg.audio.channel = 9
    interpret.write(run, o)
    rows = csv_rows(run .. "/interpretations/worst.csv")
    A.truthy(rows[2][10]:find("has 8 channels; audio.channel = 9 does not exist", 1, true), rows[2][10])
end)

test("bad arguments are clear errors and write nothing", function()
    local run, o = fixture{ number_of_audios = 0 }
    A.raises(function() interpret.write(nil, o) end, "dir")
    A.raises(function() interpret.write(run, nil) end, "options")
    local bad = {}
    for k, v in pairs(o) do bad[k] = v end
    bad.classes = { "a", "b" }
    A.raises(function() interpret.write(run, bad) end, "3 columns but there are 2 classes")
    bad.classes = CLASSES
    bad.evaluation = { probs = o.evaluation.probs, items = { 1, 2, 3 }, true_index = TRUE }
    A.raises(function() interpret.write(run, bad) end, "evaluation.items")
    bad.evaluation = { probs = o.evaluation.probs, items = { 1, 2, 3, 4, 5, 99 }, true_index = TRUE }
    A.raises(function() interpret.write(run, bad) end, "items[6] = 99")
    bad.evaluation = o.evaluation
    bad.number_of_audios = -1
    A.raises(function() interpret.write(run, bad) end, "number_of_audios")
    A.truthy(not exists(run .. "/interpretations") and not exists(run .. "/index.html"))
    -- no audio section: the tables still come, the pictures say why they are missing
    bad.number_of_audios, bad.cfg = 1, nil
    interpret.write(run, bad)
    A.truthy(csv_rows(run .. "/interpretations/worst.csv")[2][10]:find("cfg.audio is missing", 1, true))
end)

test("the index page renders in headless chromium", function()
    local ok = os.execute("command -v chromium >/dev/null 2>&1")
    if not ok then A.skip("chromium is not installed (apt-get install chromium)") end
    local run, o = fixture{ number_of_audios = 2 }
    interpret.write(run, o)
    local shot = tmpdir() .. "/shot.png"
    os.execute("timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot='"
        .. shot .. "' --window-size=1100,3000 'file://" .. run .. "/index.html' >/dev/null 2>&1")
    if not exists(shot) then A.skip("chromium ran but wrote no screenshot (no display support here)") end
    local info = plot.png_info(shot)
    A.eq({ info.width, info.height }, { 1100, 3000 })
    -- text, tables and the pictures: far more than a blank page's colours
    A.truthy(info.colors > 500, "rendered page has " .. info.colors .. " colours")
end)

return T
