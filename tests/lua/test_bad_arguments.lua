-- Bad input from Lua never crashes the process. Every C-backed function is
-- called with each of its arguments replaced in turn by a wrong value (a wrong
-- type, a released tensor, an int64 or empty tensor, NaN, a negative, huge or
-- non-integral number); each call must either work or raise a string error
-- that names the function or the argument, and must leave the valid tensors it
-- was given as they were. The wording of the tensor methods' errors is checked
-- in test_tensor_errors.lua; the cases below the sweep are the ones that once
-- crashed, read out of bounds, or gave a wrong result without a word.
--
-- Calls inside the closures are assigned to a local instead of returned:
-- `return f(x)` is a tail call, and Lua then cannot name f in "bad argument"
-- messages.

local mt = require "machrt"
local K = require "machrt.kernels"
local audio = require "machrt.audio"
local sys = require "machrt.sys"
local workers = require "machrt.workers"
local plot = require "machrt.plot_c"
local synth = require "machrt.synth_c"
local dist = require "machrt.dist_c"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local NAN = 0 / 0

local function released()
    local t = mt.zeros(3)
    t:release()
    return t
end

-- The wrong values every argument is tried with. Sizes stay small or absurd:
-- nothing here may ask for gigabytes that an allocator would hand out.
local function bad_values()
    return {
        { "nil", nil }, { "a string", "x" }, { "a table", {} }, { "true", true },
        { "a function", print }, { "a released tensor", released() },
        { "an int64 tensor", mt.zeros({ 2, 3 }, "int64") }, { "an empty tensor", mt.zeros(0) },
        { "a 0-d tensor", mt.tensor(1) }, { "NaN", NAN }, { "infinity", math.huge },
        { "-1", -1 }, { "0", 0 }, { "0.5", 0.5 }, { "math.mininteger", math.mininteger },
        { "math.maxinteger", math.maxinteger }, { "2^32 + 1", (1 << 32) + 1 },
    }
end

local function snapshot(args, n, outs)
    local saved = {}
    for i = 1, n do
        local v = args[i]
        if not outs[i] and mt.is_tensor(v) and not v:is_released() then
            saved[#saved + 1] = { i, v, v:totable(), v:shape() }
        end
    end
    return saved
end

local function same_values(a, b)
    if type(a) ~= "table" then return a == b or (a ~= a and b ~= b) end
    if type(b) ~= "table" or #a ~= #b then return false end
    for i = 1, #a do
        if not same_values(a[i], b[i]) then return false end
    end
    return true
end

-- fn's valid arguments come from make() (fresh each call: a call may write
-- into its outputs); `outs` lists the argument positions it may write.
-- Adds what is wrong to `problems`; returns the number of calls made.
local function sweep(problems, name, fn, make, outs, also_named, skip)
    outs = outs or {}
    skip = skip or {}
    local out_set = {}
    for _, i in ipairs(outs) do out_set[i] = true end
    -- Every position up to the last given or written one (nil may sit between).
    local n = 0
    for k in pairs(make()) do n = math.max(n, k) end
    for _, i in ipairs(outs) do n = math.max(n, i) end
    local calls = 0
    for i = 1, n do
        for _, bad in ipairs(bad_values()) do
            if skip[bad[1]] then goto next_value end
            local args = make()
            args[i] = bad[2]
            local before = snapshot(args, n, out_set)
            local ok, err = pcall(fn, table.unpack(args, 1, n))
            calls = calls + 1
            local what = string.format("%s with argument %d = %s", name, i, bad[1])
            if not ok then
                local short = name:match("[^.:]+$")
                if type(err) ~= "string" then
                    problems[#problems + 1] = what .. ": the error is a " .. type(err)
                elseif not (err:find(short, 1, true) or err:find("bad argument #" .. i, 1, true)
                            or (also_named and err:find(also_named, 1, true))) then
                    problems[#problems + 1] = string.format(
                        "%s: the error names neither %s nor argument %d: %s", what, short, i, err)
                end
                for _, s in ipairs(before) do
                    local t = s[2]
                    if t:is_released() or A.fmt(t:shape()) ~= A.fmt(s[4])
                            or not same_values(t:totable(), s[3]) then
                        problems[#problems + 1] = string.format(
                            "%s: argument %d was modified by a call that failed", what, s[1])
                    end
                end
            end
            ::next_value::
        end
    end
    return calls
end

-- Each entry: name, function, valid arguments, positions written, another
-- name its errors may give instead of the function's, wrong values not tried.
local function entries()
    local ws = K.workspace()
    local r = mt.rand
    local function labels() return mt.tensor({ 0, 2 }, "int64") end
    local M = getmetatable(mt.zeros(1)).__index
    local E = {
        { "conv2d_forward", K.conv2d_forward,
          function() return { r(1, 2, 5, 5), r(3, 2, 3, 3), r(3), 1, 1, 1, 1, ws } end, { 9 } },
        { "conv2d_backward", K.conv2d_backward,
          function() return { r(1, 2, 5, 5), r(3, 2, 3, 3), r(1, 3, 5, 5), 1, 1, 1, 1, ws, nil,
                              mt.zeros(3, 2, 3, 3), mt.zeros(3) } end, { 9, 10, 11 } },
        { "linear_forward", K.linear_forward, function() return { r(2, 3), r(4, 3), r(4) } end, { 4 } },
        { "linear_backward", K.linear_backward,
          function() return { r(2, 3), r(4, 3), r(2, 4), nil, mt.zeros(4, 3), mt.zeros(4) } end,
          { 4, 5, 6 } },
        { "batchnorm2d_forward", K.batchnorm2d_forward,
          function() return { r(2, 3, 4, 4), r(3), r(3), mt.zeros(3), mt.ones(3), true, 0.1, 1e-5 } end,
          { 4, 5, 9, 10, 11 } },
        { "batchnorm2d_backward", K.batchnorm2d_backward,
          function() return { r(2, 3, 4, 4), r(2, 3, 4, 4), r(3), r(3), r(3), true, nil,
                              mt.zeros(3), mt.zeros(3) } end, { 7, 8, 9 } },
        { "relu_forward", K.relu_forward, function() return { r(2, 3) } end, { 2 } },
        { "relu_backward", K.relu_backward, function() return { r(2, 3), r(2, 3) } end, { 3 } },
        { "maxpool2d_forward", K.maxpool2d_forward,
          function() return { r(1, 2, 6, 6), 3, 3, 2, 2, 1, 1 } end, { 8, 9 } },
        { "maxpool2d_backward", K.maxpool2d_backward, function()
            local y, ix = K.maxpool2d_forward(r(1, 2, 6, 6), 2, 2, 2, 2, 0, 0)
            return { y, ix, 6, 6 }
        end, { 5 } },
        { "avgpool_global_forward", K.avgpool_global_forward, function() return { r(2, 3, 4, 4) } end, { 2 } },
        { "avgpool_global_backward", K.avgpool_global_backward, function() return { r(2, 3), 4, 4 } end, { 4 } },
        { "gem_forward", K.gem_forward, function() return { r(2, 3, 4, 4), mt.tensor({ 3 }), 1e-6 } end, { 4 } },
        { "gem_backward", K.gem_backward, function()
            local x, p = r(2, 3, 4, 4), mt.tensor({ 3 })
            return { x, p, 1e-6, K.gem_forward(x, p, 1e-6), r(2, 3), nil, mt.zeros(1) }
        end, { 6, 7 } },
        { "dropout_forward", K.dropout_forward, function() return { r(2, 3), 0.5 } end, { 3, 4 } },
        { "dropout_backward", K.dropout_backward, function() return { r(2, 3), r(2, 3) } end, { 3 } },
        { "bce_logits_forward", K.bce_logits_forward, function() return { r(2, 3), r(2, 3) } end },
        { "bce_logits_backward", K.bce_logits_backward, function() return { r(2, 3), r(2, 3) } end, { 3 } },
        { "cross_entropy_forward", K.cross_entropy_forward, function() return { r(2, 3), labels() } end },
        { "cross_entropy_backward", K.cross_entropy_backward, function() return { r(2, 3), labels() } end, { 3 } },
        { "margin_cross_entropy_forward", K.margin_cross_entropy_forward,
          function() return { r(2, 3), labels(), 30, 0.5, 30 } end },
        { "margin_cross_entropy_backward", K.margin_cross_entropy_backward,
          function() return { r(2, 3), labels(), 30, 0.5, 30 } end, { 6 } },
        { "gaussian_fit", K.gaussian_fit, function() return { r(6, 3), 0.1 } end },
        { "mahalanobis_forward", K.mahalanobis_forward, function() return { r(2, 3), r(3), r(3, 3) } end, { 4 } },
        { "mahalanobis_backward", K.mahalanobis_backward,
          function() return { r(2, 3), r(3), r(3, 3), r(2), r(2) } end, { 6 } },
        { "adamw_step", K.adamw_step,
          function() return { r(4), r(4), mt.zeros(4), mt.zeros(4), nil, { lr = 0.1 }, 1 } end, { 1, 3, 4, 5 } },
        { "sgd_step", K.sgd_step,
          function() return { r(4), r(4), mt.zeros(4), { lr = 0.1, momentum = 0.9 }, true } end, { 1, 3 } },
        { "sum_squares", K.sum_squares, function() return { r(4) } end },
        { "audio.resample", audio.resample, function() return { r(2, 50), 16000, 8000 } end },
        { "audio.chunks", audio.chunks, function() return { r(100), 100, 0.25 } end },
        { "amplitude_to_db", audio.amplitude_to_db, function() return { r(2, 3), { top_db = 80 } } end },
        { "audio.unpack_pcm16", audio.unpack_pcm16,
          function() return { mt.tensor({ 5, 8000, 1, 2 }, "int64"), { sample_rate = 16000 } } end },
        { "stft_frames", audio.stft_frames, function() return { 1000, 160, false, 400 } end },
        { "MelSpectrogram", audio.MelSpectrogram, function() return { { n_fft = 64, n_mels = 8 } } end },
        { "MelSpectrogram", function(...) local y = audio.MelSpectrogram({ n_fft = 64, n_mels = 8 })(...); return y end,
          function() return { r(300) } end, { 2 } },
        { "workers.roundtrip", workers.roundtrip, function() return { { 1, "a", r(2) } } end },
        { "cache_put", workers.cache_put, function() return { "test_bad_arguments", r(2) } end },
        { "plot.range", plot.range, function() return { r(2, 3) } end },
        { "plot.colormap", plot.colormap, function() return { "magma", 0.5 } end },
        { "plot.canvas", plot.canvas, function() return { 8, 8 } end },
        { "plot.image", function(...) local c = plot.canvas(8, 8); local lo = c:image(...); return lo end,
          function() return { r(2, 3), 0, 0, 4, 4, { vmin = 0, vmax = 1 } } end },
        { "synth.clip", synth.clip, function() return { { type = "pump", snr_db = 6, seed = 3 } } end },
        { "json_encode", sys.json_encode, function() return { { a = { 1, 2 } }, { indent = true } } end },
        -- Its errors name the text's source (argument 2) instead.
        { "json_decode", sys.json_decode, function() return { "{\"a\": [1, 2]}", "cfg.json" } end, {},
          "cfg.json" },
        { "allreduce", dist.allreduce, function() return { r(4), "sum" } end, { 1 } },
        { "broadcast", dist.broadcast, function() return { r(4), 0 } end, { 1 } },
        { "reducer", dist.reducer, function() return { r(4), { 1, 3 }, "mean" } end },
        -- machrt and the tensor methods (their messages: test_tensor_errors.lua)
        { "zeros", mt.zeros, function() return { 2, 3 } end },
        { "full", mt.full, function() return { { 2, 3 }, 1.5 } end },
        -- arange(0, 2^32 + 1) is a valid 17 GB request: a kernel that
        -- overcommits grants it and then kills the process that fills it.
        { "arange", mt.arange, function() return { 0, 5, 1 } end, {}, nil, { ["2^32 + 1"] = true } },
        { "tensor", mt.tensor, function() return { { { 1, 2 }, { 3, 4 } }, "float32" } end },
        { "narrow", M.narrow, function() return { r(3, 4), 2, 2, 2 } end },
        { "select", M.select, function() return { r(3, 4), 2, 3 } end },
        { "permute", M.permute, function() return { r(2, 3, 4), { 3, 1, 2 } } end },
        { "expand", M.expand, function() return { r(1, 3), { 4, 3 } } end },
        { "reshape", M.reshape, function() return { r(2, 3), { 3, 2 } } end },
        { "get", M.get, function() return { r(2, 3), 2, 3 } end },
        { "fill", M.fill,
          function() return { mt.zeros({ 2 }, "int64"), 4 } end, { 1 } },
        { "copy", M.copy, function() return { mt.zeros(2, 3), r(3) } end, { 1 } },
        { "matmul", M.matmul, function() return { r(2, 3), r(3, 4) } end },
        { "sum", M.sum, function() return { r(2, 3), 2 } end },
    }
    return E
end

test("the sweep reports a call that fails after writing an input, or fails unnamed", function()
    local problems = {}
    sweep(problems, "writes", function(t, v) t:fill(5); error("writes: no " .. tostring(v)) end,
        function() return { mt.zeros(2), 1 } end)
    A.truthy(#problems > 0 and problems[#problems]:find("argument 1 was modified", 1, true),
        "a failing call that wrote argument 1: " .. tostring(problems[#problems]))
    problems = {}
    sweep(problems, "quiet", function() error("something went wrong") end, function() return { 1 } end)
    A.truthy(#problems > 0 and problems[1]:find("names neither quiet nor argument 1", 1, true),
        "an error naming nothing: " .. tostring(problems[1]))
end)

test("sweep: every argument of every C-backed function, each of the wrong values", function()
    local calls, functions, problems = 0, 0, {}
    for _, e in ipairs(entries()) do
        calls = calls + sweep(problems, e[1], e[2], e[3], e[4], e[5], e[6])
        functions = functions + 1
    end
    if #problems > 0 then
        error(#problems .. " bad answers:\n" .. table.concat(problems, "\n"), 0)
    end
    -- So that a shrunken list shows up here rather than as a quieter sweep.
    A.truthy(functions >= 60, "functions swept: " .. functions)
    A.truthy(calls >= 3000, "calls made: " .. calls)
end)

-- Cases that once crashed or were silently wrong -----------------------------------

test("narrow: a length that overflows start + length is refused, not a view past the end", function()
    local x = mt.arange(3)
    -- 2 + math.maxinteger wrapped negative and passed the bounds check: a
    -- view of 2^63 elements over 3.
    A.raises(function() local v = x:narrow(1, 2, math.maxinteger); return v end,
        "narrow:", "does not fit dimension 1 (size 3)")
    A.raises(function() local v = x:narrow(1, math.mininteger, 1); return v end,
        "narrow:", "out of range for dimension 1")
    A.raises(function() local v = x:select(1, math.mininteger); return v end,
        "select:", "out of range for dimension 1")
    A.eq(x:totable(), { 0, 1, 2 })
end)

test("expand: a shape whose element count overflows int64 is refused", function()
    A.raises(function() local v = mt.zeros(1, 3):expand({ 1 << 62, 3 }); return v end,
        "expand:", "more elements than an int64 counts")
    A.shape_eq(mt.zeros(1, 3):expand({ 1 << 20, 3 }), { 1 << 20, 3 }) -- large is fine: stride 0
end)

test("permute, conv2d, maxpool2d, set_num_threads: 2^32 + 1 is not taken for 1", function()
    A.raises(function() local v = mt.zeros(2, 3):permute({ (1 << 32) + 1, 2 }); return v end,
        "permute:", "4294967297")
    local ws = K.workspace()
    local x, w = mt.rand(1, 1, 5, 5), mt.rand(1, 1, 3, 3)
    A.raises(function() local y = K.conv2d_forward(x, w, nil, (1 << 32) + 1, 1, 0, 0, ws); return y end,
        "bad argument #4", "conv2d_forward", "C int")
    A.raises(function() local y = K.conv2d_forward(x, w, nil, 1, 1, 1 << 32, 0, ws); return y end,
        "bad argument #6", "conv2d_forward")
    A.raises(function() local y = K.maxpool2d_forward(x, (1 << 32) + 2, 2, 1, 1, 0, 0); return y end,
        "bad argument #2", "maxpool2d_forward")
    local threads = mt.get_num_threads()
    A.raises(function() mt.set_num_threads((1 << 32) + 1) end, "set_num_threads", "4294967297")
    A.eq(mt.get_num_threads(), threads, "a refused thread count changed the setting")
end)

test("fill and full of an int64 tensor refuse NaN, 1e300 and 1.5", function()
    local x = mt.tensor({ 7, 8 }, "int64")
    for _, v in ipairs({ NAN, 1e300, -math.huge, 1.5 }) do
        A.raises(function() x:fill(v) end, "fill:", "int64")
        A.raises(function() local t = mt.full({ 2 }, v, "int64"); return t end, "full:", "int64")
    end
    A.eq(x:totable(), { 7, 8 }, "a refused fill wrote something")
    A.eq(x:fill(-3.0):totable(), { -3, -3 })
    A.eq(mt.full({ 1 }, 2 ^ 53, "int64"):get(1), 1 << 53)
end)

test("stft_frames and mel:frames of a huge clip length: refused, not an overflowed count", function()
    A.raises(function() local n = audio.stft_frames(math.maxinteger, 1); return n end,
        "stft_frames", "2^53")
    local mel = audio.MelSpectrogram({ n_fft = 400, n_mels = 40 })
    A.raises(function() local n = mel:frames(math.maxinteger); return n end, "frames", "2^53")
    A.eq(audio.stft_frames(1 << 53, 1 << 20), (1 << 33) + 1)
    A.eq(mel:frames(1 << 53), 1 + (1 << 53) // 200)
end)

test("unpack_pcm16: a frame count near 2^63 or of 0 is not load_pcm16's, and says so", function()
    -- (frames + 3) / 4 overflowed for the first two (caught by UBSan; the
    -- wrapped value still failed the size check). 0 frames passed.
    for _, packed in ipairs({ { math.maxinteger, 16000, 0 }, { math.maxinteger - 2, 16000, 0 },
                              { 0, 16000 } }) do
        A.raises(function()
            local w = audio.unpack_pcm16(mt.tensor(packed, "int64"), { name = "a.wav" })
            return w
        end, "audio.unpack_pcm16", "a.wav", "not the samples of audio.load_pcm16")
    end
end)

test("workers: tables nested up to 31 deep cross from a coroutine's small stack", function()
    -- encode pushed two stack slots a level without asking for them: from a
    -- fresh coroutine (a 40-slot stack) that wrote past the Lua stack, and
    -- the heap broke (glibc: "mremap_chunk(): invalid pointer").
    for depth = 20, 31 do
        local t = "leaf"
        for _ = 1, depth do t = { t } end
        for _ = 1, 5 do
            local ok, back = coroutine.resume(coroutine.create(workers.roundtrip), t)
            A.truthy(ok, tostring(back))
            for _ = 1, depth do back = back[1] end
            A.eq(back, "leaf")
        end
    end
    collectgarbage()
end)

test("JSON: text after the value and zero bytes are refused, not dropped", function()
    A.raises(function() local v = sys.json_decode('{"a": 1} {"b": 2}', "cfg.json"); return v end,
        "cfg.json", "invalid JSON near byte 9", "text after the value")
    A.raises(function() local v = sys.json_decode('[1] x', "cfg.json"); return v end, "cfg.json")
    A.eq(sys.json_decode(' {"a": 1} \n', "cfg.json"), { a = 1 })
    A.raises(function() local s = sys.json_encode({ name = "a\0b" }); return s end,
        "json_encode", "zero byte", "name")
    A.raises(function() local s = sys.json_encode({ ["a\0b"] = 1 }); return s end,
        "json_encode", "zero byte")
end)

test("dist.reducer refuses to run on a gradient buffer that was released", function()
    -- It keeps the buffer's data pointer; under mpirun the collectives wrote
    -- into the freed memory. One process checks the same refusal.
    local flat = mt.zeros(4)
    local r = dist.reducer(flat, { 1, 3 }, "sum")
    flat:release()
    A.raises(function() r:start(1) end, "reducer", "buffer has been released")
    A.raises(function() r:wait() end, "reducer", "buffer has been released")
    r:release() -- and it can still be let go
end)

test("process_alive: a PID beyond pid_t is no process (it narrowed to 0, our own group)", function()
    A.eq(sys.process_alive(1 << 40), false)
    A.eq(sys.process_alive(1 << 32), false)
    A.eq(sys.process_alive(sys.pid()), true)
end)

return T
