-- The spectral front end through Lua: audio.MelSpectrogram, amplitude_to_db,
-- stft_frames. Numbers are checked against torchaudio's
-- (tests/fixtures/mel_reference.safetensors, made by gen_mel_fixtures.py; the
-- settings of each case are read from the file's metadata), and against a
-- real MIMII clip when MACHRT_SAMPLE_DATA names the sample folder.

local mt = require "machrt"
local audio = require "machrt.audio"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local REF = "tests/fixtures/mel_reference.safetensors"
local MIMII = "tests/fixtures/mel_mimii_fan.safetensors"

local REFERENCE = { sample_rate = 22050, n_fft = 2048, hop_length = 512, f_min = 50,
                    f_max = 16000, n_mels = 128 }

local function with(base, extra)
    local t = {}
    for k, v in pairs(base) do t[k] = v end
    for k, v in pairs(extra or {}) do t[k] = v end
    return t
end

-- "k=v k=v" (the fixtures' metadata) -> MelSpectrogram options.
local function settings(s)
    local raw = {}
    for k, v in s:gmatch("(%S+)=(%S+)") do raw[k] = v end
    local opts = {}
    for _, k in ipairs { "sample_rate", "n_fft", "win_length", "hop_length", "n_mels" } do
        opts[k] = math.tointeger(tonumber(raw[k]))
    end
    for _, k in ipairs { "f_min", "f_max", "power" } do opts[k] = tonumber(raw[k]) end
    opts.center = raw.center == "1"
    opts.pad_mode, opts.mel_scale = raw.pad_mode, raw.mel_scale
    if raw.norm ~= "none" then opts.norm = raw.norm end
    return opts, raw
end

local fixtures, meta
local function ref()
    if not fixtures then fixtures, meta = mt.load(REF) end
    return fixtures, meta
end

local function rel_frobenius(a, b)
    A.shape_eq(a, b:shape())
    local d = a - b
    return math.sqrt((d * d):sum() / (b * b):sum())
end

-- max |a - b| over the elements where mask_src > floor.
local function max_diff_where(a, b, mask_src, floor)
    local fa, fb, fm = a:reshape { -1 }, b:reshape { -1 }, mask_src:reshape { -1 }
    local worst, checked = 0, 0
    local ta, tb, tm = fa:totable(), fb:totable(), fm:totable()
    for i = 1, #tm do
        if tm[i] > floor then
            checked = checked + 1
            worst = math.max(worst, math.abs(ta[i] - tb[i]))
        end
    end
    return worst, checked
end

-- Against torchaudio ---------------------------------------------------------------

test("power mel matches torchaudio (every fixture case)", function()
    local fx, md = ref()
    local n = 0
    for key, s in pairs(md) do
        local name = key:match("^case%.(.+)")
        if name then
            local opts, raw = settings(s)
            local mel = audio.MelSpectrogram(opts)
            local y = mel:forward(fx[raw.input])
            local err = rel_frobenius(y, fx["mel." .. name])
            A.truthy(err <= 1e-4, string.format("case %s: relative Frobenius error %g", name, err))
            n = n + 1
        end
    end
    A.truthy(n >= 10, "fixture cases found: " .. n)
end)

test("dB of the mel within 0.01 dB of torchaudio where power > 1e-8 of max", function()
    local fx, md = ref()
    for _, name in ipairs { "noise_htk", "chirp_htk" } do
        local opts, raw = settings(md["case." .. name])
        local db = audio.amplitude_to_db(audio.MelSpectrogram(opts)(fx[raw.input]))
        local power = fx["mel." .. name]
        local worst, checked = max_diff_where(db, fx["db." .. name], power, 1e-8 * power:max())
        A.truthy(checked > 1000, name .. ": only " .. checked .. " values checked")
        A.truthy(worst <= 0.01, string.format("%s: max dB difference %g", name, worst))
    end
end)

test("amplitude_to_db matches AmplitudeToDB (top_db grouping, magnitude)", function()
    local fx, md = ref()
    local n = 0
    for key, s in pairs(md) do
        local name = key:match("^dbcase%.(.+)")
        if name then
            local raw = {}
            for k, v in s:gmatch("(%S+)=(%S+)") do raw[k] = v end
            local want = fx["db." .. name]
            local x = fx[raw.input]
            if raw.reshape then x = x:reshape(want:shape()) end
            local opts = { stype = raw.stype }
            if raw.top_db ~= "none" then opts.top_db = tonumber(raw.top_db) end
            local got = audio.amplitude_to_db(x, opts)
            A.shape_eq(got, want:shape())
            local worst = (got - want):abs():max()
            A.truthy(worst <= 1e-3, string.format("%s: max dB difference %g", name, worst))
            n = n + 1
        end
    end
    A.eq(n, 6)
end)

test("filterbank matches torchaudio's fb; all-zero columns above Nyquist", function()
    local fx, md = ref()
    for _, name in ipairs { "htk", "slaney", "slaney_norm" } do
        local mel = audio.MelSpectrogram(settings(md["fbcase." .. name]))
        local fb, want = mel:filterbank(), fx["fb." .. name]
        A.shape_eq(fb, { 1025, 128 })
        -- torchaudio's float32 band edges near 11 kHz are off by ~2e-5
        -- of the peak (see tests/c/test_spectral.c).
        A.truthy((fb - want):abs():max() <= 5e-5 * want:max(), name)
        local colmax, wantmax = fb:max(1):totable(), want:max(1):totable()
        local zero = 0
        for j = 1, 128 do
            A.eq(colmax[j] == 0, wantmax[j] == 0, name .. " filter " .. j)
            if colmax[j] == 0 then
                zero = zero + 1
                -- the zero filters are the top ones, above Nyquist
                A.truthy(j > 100, name .. ": zero filter " .. j)
            end
        end
        A.truthy(zero > 0, name .. ": expected all-zero filters with f_max above Nyquist")
    end
end)

test("real MIMII clip (channel 1, 16 kHz) matches torchaudio", function()
    local dir = os.getenv("MACHRT_SAMPLE_DATA")
    if not dir or dir == "" then A.skip("MACHRT_SAMPLE_DATA is not set (the mimii-sample folder)") end
    if not audio.load then A.skip("audio.load is not available in this build") end
    local fx, md = mt.load(MIMII)
    local wave, sr = audio.load(dir .. "/" .. md.file, { channel = 1 })
    A.eq(sr, 16000)
    A.shape_eq(wave, { tonumber(md.frames) })
    local opts = settings(md.settings)
    local y = audio.MelSpectrogram(opts)(wave)
    local want = fx.mel
    local err = rel_frobenius(y, want)
    A.truthy(err <= 1e-4, string.format("relative Frobenius error %g", err))
    local worst, checked = max_diff_where(audio.amplitude_to_db(y), audio.amplitude_to_db(want),
        want, 1e-8 * want:max())
    A.truthy(checked > 0.9 * want:numel(), "values checked: " .. checked)
    A.truthy(worst <= 0.01, string.format("max dB difference %g", worst))
end)

-- Shapes, defaults, batches ---------------------------------------------------------

test("frame counts: 10 s -> 431, 5 s -> 216 at 22050 Hz", function()
    A.eq(audio.stft_frames(220500, 512), 431)
    A.eq(audio.stft_frames(110250, 512), 216)
    A.eq(audio.stft_frames(110250, 512, true, 2048), 216)
    A.eq(audio.stft_frames(4000, 128, false, 256), 1 + (4000 - 256) // 128)
    A.eq(audio.stft_frames(4000, 64, true, 255), 1 + (4000 + 254 - 255) // 64)
    local mel = audio.MelSpectrogram(REFERENCE)
    A.shape_eq(mel(mt.zeros { 220500 }), { 128, 431 })
    A.shape_eq(mel(mt.zeros { 2, 110250 }), { 2, 128, 216 })
    A.eq(mel:frames(220500), 431)
    A.eq(mel(mt.zeros { 220500 }):max(), 0)
end)

test("defaults are torchaudio's", function()
    local c = audio.MelSpectrogram():config()
    A.eq(c, { sample_rate = 16000, n_fft = 400, win_length = 400, hop_length = 200, f_min = 0,
              f_max = 8000, n_mels = 128, power = 2, center = true, pad_mode = "reflect",
              mel_scale = "htk" })
    -- win_length defaults to n_fft, hop_length to win_length // 2, f_max to sample_rate // 2
    c = audio.MelSpectrogram { sample_rate = 22050, n_fft = 1024 }:config()
    A.eq({ c.win_length, c.hop_length, c.f_max }, { 1024, 512, 11025 })
    c = audio.MelSpectrogram { n_fft = 1024, win_length = 801 }:config()
    A.eq(c.hop_length, 400)
    -- config() round-trips
    local opts = with(REFERENCE, { mel_scale = "slaney", norm = "slaney", power = 1 })
    local c2 = audio.MelSpectrogram(audio.MelSpectrogram(opts):config()):config()
    A.eq(c2, audio.MelSpectrogram(opts):config())
    A.eq(c2.norm, "slaney")
end)

test("batch rows equal single clips; views; forward == call; out reuse", function()
    local mel = audio.MelSpectrogram { n_fft = 512, hop_length = 128, n_mels = 40 }
    mt.manual_seed(3)
    local base = mt.rand { 3000, 3 } * 2 - 1
    local batch = base:transpose(1, 2)            -- {3, 3000}, not contiguous
    local yb = mel:forward(batch)
    A.shape_eq(yb, { 3, 40, 1 + 3000 // 128 })
    for b = 1, 3 do
        local y = mel(batch:select(1, b))
        A.eq((y - yb:select(1, b)):abs():max(), 0, "row " .. b)
    end
    local out = mt.zeros { 3, 40, 24 }
    local r = mel:forward(batch, out)
    A.truthy(rawequal(r, out))
    A.eq((out - yb):abs():max(), 0)
    A.raises(function() local y = mel:forward(batch, mt.zeros { 3, 40, 25 }); return y end,
        "MelSpectrogram", "3x40x25", "3x40x24")
end)

test("the same numbers for any thread count", function()
    local mel = audio.MelSpectrogram(REFERENCE)
    mt.manual_seed(5)
    local x = mt.rand { 3, 30000 }
    local saved = mt.get_num_threads()
    mt.set_num_threads(1)
    local a = audio.amplitude_to_db(mel(x), { top_db = 80 })
    mt.set_num_threads(2)
    local b = audio.amplitude_to_db(mel(x), { top_db = 80 })
    mt.set_num_threads(saved)
    A.eq((a - b):abs():max(), 0)
end)

test("amplitude_to_db: definition, clamp, top_db, stype, out", function()
    local x = mt.tensor { 0, 1e-12, 1e-10, 1, 10, 1000 }
    A.tensor_near(audio.amplitude_to_db(x), { -100, -100, -100, 0, 10, 30 }, 1e-6)
    A.tensor_near(audio.amplitude_to_db(x, { stype = "magnitude" }),
        { -200, -200, -200, 0, 20, 60 }, 1e-6)
    A.tensor_near(audio.amplitude_to_db(x, { top_db = 25 }), { 5, 5, 5, 5, 10, 30 }, 1e-6)
    local out = mt.zeros { 6 }
    local r = audio.amplitude_to_db(x, { out = out })
    A.truthy(rawequal(r, out))
    A.near(out:get(6), 30, 1e-6)
    audio.amplitude_to_db(x, { out = x })        -- in place
    A.near(x:get(5), 10, 1e-6)
end)

test("MelSpectrogram lifecycle: release, close, tostring", function()
    local mel = audio.MelSpectrogram(REFERENCE)
    A.truthy(tostring(mel):find("MelSpectrogram{sample_rate=22050, n_fft=2048", 1, true))
    mel:release()
    mel:release()                                   -- idempotent
    A.raises(function() local y = mel(mt.zeros { 4096 }); return y end, "released")
    A.eq(tostring(mel), "MelSpectrogram (released)")
    do
        local m2 <close> = audio.MelSpectrogram(REFERENCE)
        A.shape_eq(m2(mt.zeros { 4096 }), { 128, 9 })
        mel = m2
    end
    A.raises(function() local c = mel:config(); return c end, "released")
end)

test("the all-zero filter warning is printed once", function()
    local p = assert(io.popen("./machrt -e 'local a = require \"machrt.audio\"; " ..
        "for i = 1, 3 do a.MelSpectrogram{sample_rate = 22050, n_fft = 2048, " ..
        "f_max = 16000} end' 2>&1"))
    local out = p:read("a")
    p:close()
    local n = select(2, out:gsub("mel filters are all zero", ""))
    A.eq(n, 1, "warning lines in: " .. out)
    A.truthy(out:find("Nyquist", 1, true))
end)

test("mel:zero_filters counts them; quiet_zero_filter_warning turns the warning off", function()
    A.eq(audio.MelSpectrogram{ sample_rate = 22050, n_fft = 2048, f_max = 16000 }:zero_filters(), 13)
    A.eq(audio.MelSpectrogram{ sample_rate = 22050, n_fft = 2048 }:zero_filters(), 0)
    local p = assert(io.popen("./machrt -e 'local a = require \"machrt.audio\"; a.quiet_zero_filter_warning(); " ..
        "a.MelSpectrogram{sample_rate = 22050, n_fft = 2048, f_max = 16000}' 2>&1"))
    local out = p:read("a")
    p:close()
    A.eq(out, "", "no warning once turned off")
end)

-- Bad input ------------------------------------------------------------------------------

local function mel_error(opts, ...)
    return A.raises(function() local m = audio.MelSpectrogram(opts); return m end,
        "MelSpectrogram", ...)
end

test("bad settings: n_fft < win_length, hop, f_min/f_max, n_mels", function()
    mel_error({ n_fft = 400, win_length = 512 }, "n_fft (400) must be at least win_length (512)")
    mel_error({ hop_length = 0 }, "hop_length must be positive, got 0")
    mel_error({ hop_length = -5 }, "hop_length", "-5")
    mel_error({ f_min = 8000 }, "f_min (8000) must be less than f_max (8000)")
    mel_error({ f_min = 9000, f_max = 100 }, "f_min (9000)", "f_max (100)")
    mel_error({ f_min = -1 }, "f_min")
    mel_error({ n_mels = 0 }, "n_mels", "got 0")
    mel_error({ n_fft = 0 }, "n_fft")
    mel_error({ n_fft = 1 << 21, win_length = 400 }, "n_fft 2097152 is too large")
    mel_error({ win_length = 0 }, "win_length")
    mel_error({ sample_rate = 0 }, "sample_rate")
    mel_error({ power = 0 }, "power")
    mel_error({ power = -1 }, "power")
end)

test("bad settings: unknown mel_scale, norm, pad_mode, option keys, types", function()
    mel_error({ mel_scale = "mel" }, "unknown mel_scale 'mel'", "'htk' or 'slaney'")
    mel_error({ norm = "area" }, "unknown norm 'area'", "nil or 'slaney'")
    mel_error({ pad_mode = "wrap" }, "unknown pad_mode 'wrap'", "'reflect' or 'constant'")
    mel_error({ pad_mode = 3 }, "unknown pad_mode 3")
    local msg = mel_error({ hop = 512 }, "unknown option 'hop'", "valid keys:")
    for _, k in ipairs { "sample_rate", "n_fft", "win_length", "hop_length", "f_min", "f_max",
                         "n_mels", "power", "center", "pad_mode", "mel_scale", "norm" } do
        A.truthy(msg:find(k, 1, true), "valid keys should list " .. k)
    end
    mel_error({ [1] = 2048 }, "option keys must be strings")
    mel_error({ n_fft = "big" }, "n_fft must be an integer", "big")
    mel_error({ n_fft = 2048.5 }, "n_fft must be an integer")
    mel_error({ f_max = "top" }, "f_max must be a number")
    mel_error({ center = 1 }, "center must be a boolean")
    A.raises(function() local m = audio.MelSpectrogram(2048); return m end,
        "MelSpectrogram", "table of options")
end)

test("bad wave: rank, dtype, not a tensor, too short for reflect padding", function()
    local mel = audio.MelSpectrogram(REFERENCE)
    A.raises(function() local y = mel(mt.zeros { 2, 2, 4096 }); return y end,
        "MelSpectrogram", "wave must be {frames} or {B, frames}", "3-d", "2x2x4096")
    A.raises(function() local y = mel(mt.tensor(1)); return y end, "wave", "0-d")
    A.raises(function() local y = mel(mt.zeros({ 4096 }, "int64")); return y end,
        "wave must be float32, got int64")
    A.raises(function() local y = mel:forward({ 1, 2, 3 }); return y end,
        "wave must be a tensor", "table")
    A.raises(function() local y = mel:forward(); return y end, "wave must be a tensor", "no value")
    -- torch's F.pad refuses a reflect pad as long as the signal; so do we,
    -- naming both lengths.
    A.raises(function() local y = mel(mt.zeros { 1000 }); return y end,
        "wave has 1000 samples", "reflect padding of n_fft // 2 = 1024", "at least 1025")
    A.shape_eq(mel(mt.zeros { 1025 }), { 128, 3 })
    local const = audio.MelSpectrogram(with(REFERENCE, { pad_mode = "constant" }))
    A.shape_eq(const(mt.zeros { 1000 }), { 128, 2 })
    local nocenter = audio.MelSpectrogram(with(REFERENCE, { center = false }))
    A.raises(function() local y = nocenter(mt.zeros { 2000 }); return y end,
        "wave has 2000 samples", "n_fft (2048)")
end)

test("bad input to amplitude_to_db and stft_frames", function()
    local x = mt.ones { 4 }
    A.raises(function() local y = audio.amplitude_to_db(x, { top_db = -1 }); return y end,
        "amplitude_to_db", "top_db", "-1")
    A.raises(function() local y = audio.amplitude_to_db(x, { topdb = 80 }); return y end,
        "unknown option 'topdb'", "top_db, stype, out")
    A.raises(function() local y = audio.amplitude_to_db(x, { stype = "energy" }); return y end,
        "unknown stype 'energy'")
    A.raises(function() local y = audio.amplitude_to_db({ 1, 2 }); return y end,
        "amplitude_to_db", "must be a tensor")
    A.raises(function() local y = audio.amplitude_to_db(mt.ones({ 2 }, "int64")); return y end,
        "amplitude_to_db", "float32")
    A.raises(function() local y = audio.amplitude_to_db(x, { out = mt.zeros { 5 } }); return y end,
        "amplitude_to_db", "5", "4")
    A.raises(function() local n = audio.stft_frames(1000, 0); return n end, "stft_frames", "hop", "0")
    A.raises(function() local n = audio.stft_frames(-1, 10); return n end, "stft_frames", "n", "-1")
    A.raises(function() local n = audio.stft_frames(1000, 10, false); return n end,
        "stft_frames", "n_fft")
end)

return T
