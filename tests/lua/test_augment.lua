-- machrt.augment: mix, gain, time_shift and spec_mask on small random
-- batches, each checked against what the transform must preserve (convex
-- targets, RMS ratios, circular rotations, mean-filled stripes).

local mt = require "machrt"
local random = require "machrt.random"
local augment = require "machrt.augment"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- A {rows, cols} batch of distinct values from its own stream.
local function batch(rows, cols, seed)
    local r = random.stream(seed, 99)
    local t = {}
    for i = 1, rows do
        t[i] = {}
        for j = 1, cols do t[i][j] = r:normal() end
    end
    local x = mt.tensor(t)
    return x, x:totable()   -- the float32 values
end

local function one_hot(rows, classes)
    local t = {}
    for i = 1, rows do
        t[i] = {}
        for c = 1, classes do t[i][c] = (c == (i - 1) % classes + 1) and 1 or 0 end
    end
    return mt.tensor(t)
end

local function rms(row)
    local s = 0
    for _, x in ipairs(row) do s = s + x * x end
    return math.sqrt(s / #row)
end

test("mix: targets stay convex combinations, waves mix by the same lambda", function()
    local B, N = 6, 50
    local wave, w0 = batch(B, N, 1)
    -- Six rows, six classes: each row's partner is readable from its target.
    local target = one_hot(B, B)
    local _, _, lambdas = augment.mix(wave, target, random.stream(4, 1), { probability = 1 })
    A.eq(#lambdas, B)
    local t, w = target:totable(), wave:totable()
    local mixed = 0
    for b = 1, B do
        local l = lambdas[b]
        A.truthy(l >= 0 and l <= 1, "lambda " .. l)
        local sum, partner = 0, b
        for c = 1, B do
            sum = sum + t[b][c]
            A.truthy(t[b][c] >= -1e-6 and t[b][c] <= 1 + 1e-6, "target entry " .. t[b][c])
            if c ~= b and t[b][c] > 1e-6 then partner = c end
        end
        A.near(sum, 1, 1e-6, "row " .. b .. " sums to 1")
        if partner ~= b then
            mixed = mixed + 1
            A.near(t[b][b], l, 1e-6)
            A.near(t[b][partner], 1 - l, 1e-6)
        end
        for j = 1, N do
            A.near(w[b][j], l * w0[b][j] + (1 - l) * w0[partner][j], 1e-5, "wave " .. b .. "," .. j)
        end
    end
    A.truthy(mixed >= 2, "the permutation should pair up some rows")
end)

test("mix: the same stream gives the same batch; another stream another", function()
    local function run(seed)
        local wave = batch(8, 20, 2)
        local target = one_hot(8, 4)
        augment.mix(wave, target, random.stream(seed), { concentration = 0.4, iterations = 2 })
        return wave:totable(), target:totable()
    end
    local w1, t1 = run(5)
    local w2, t2 = run(5)
    A.eq(w1, w2)
    A.eq(t1, t2)
    local w3 = run(6)
    A.truthy(A.fmt(w3) ~= A.fmt(w1), "another seed should mix differently")
    for _, row in ipairs(t1) do
        local s = 0
        for _, x in ipairs(row) do s = s + x end
        A.near(s, 1, 1e-5, "two iterations keep rows summing to 1")
    end
end)

test("mix: a tiny concentration gives lambdas near 0 or 1 (and no NaN)", function()
    local B = 64
    local wave, target = batch(B, 4, 3), one_hot(B, 4)
    local _, _, tiny = augment.mix(wave, target, random.stream(7), { concentration = 0.001 })
    local ends = 0
    for _, l in ipairs(tiny) do
        A.truthy(l == l, "lambda is NaN")
        if l < 0.01 or l > 0.99 then ends = ends + 1 end
    end
    A.truthy(ends >= 0.9 * B, ends .. " of " .. B .. " lambdas near 0 or 1")
    local w = wave:totable()
    for b = 1, B do for j = 1, 4 do A.truthy(w[b][j] == w[b][j], "NaN in the mixed wave") end end
    -- With concentration 1 (uniform lambdas) most are in between.
    local _, _, flat = augment.mix(batch(B, 4, 3), one_hot(B, 4), random.stream(7), { concentration = 1 })
    local inner = 0
    for _, l in ipairs(flat) do if l > 0.01 and l < 0.99 then inner = inner + 1 end end
    A.truthy(inner >= 0.8 * B, inner .. " of " .. B .. " uniform lambdas in (0.01, 0.99)")
end)

test("mix: probability 0 and one-row batches leave the batch alone", function()
    local wave, w0 = batch(4, 10, 4)
    local target = one_hot(4, 2)
    local t0 = target:totable()
    local w, t, lambdas = augment.mix(wave, target, random.stream(1), { probability = 0 })
    A.eq(lambdas, nil)
    A.truthy(w == wave and t == target, "mix works in place")
    A.eq(wave:totable(), w0)
    A.eq(target:totable(), t0)
    local one, o0 = batch(1, 10, 4)
    A.eq(select(3, augment.mix(one, one_hot(1, 2), random.stream(1))), nil)
    A.eq(one:totable(), o0)
end)

test("mix: mismatched rows and bad options are errors", function()
    A.raises(function() augment.mix(batch(4, 10, 1), one_hot(3, 2), random.stream(1)) end,
        "wave has 4 rows but target has 3")
    A.raises(function() augment.mix(batch(4, 10, 1), one_hot(4, 2), random.stream(1), { concentration = 0 }) end,
        "concentration must be positive")
    A.raises(function() augment.mix(batch(4, 10, 1), one_hot(4, 2), random.stream(1), { target = "OneHot" }) end,
        "only mix_target 'Ratio'")
    A.raises(function() augment.mix(mt.zeros{ 10 }, one_hot(4, 2), random.stream(1)) end,
        "expects a batch tensor", "shape 10")
end)

test("gain: each row is scaled by a factor within [min_db, max_db]", function()
    local wave, w0 = batch(12, 40, 5)
    augment.gain(wave, random.stream(2), { min_db = -6, max_db = 3 })
    local w = wave:totable()
    local lo, hi = math.huge, -math.huge
    for b = 1, 12 do
        local k = rms(w[b]) / rms(w0[b])
        local db = 20 * math.log(k, 10)
        A.truthy(db >= -6 - 1e-4 and db <= 3 + 1e-4, "row " .. b .. " gain " .. db .. " dB")
        lo, hi = math.min(lo, db), math.max(hi, db)
        for j = 1, 40 do A.near(w[b][j], k * w0[b][j], 1e-5) end
    end
    A.truthy(hi - lo > 2, "gains should vary between rows: " .. lo .. " .. " .. hi)
    -- A fixed gain: exactly 10^(6/20) for every row.
    local fixed, f0 = batch(3, 40, 6)
    augment.gain(fixed, random.stream(2), { min_db = 6, max_db = 6 })
    local f = fixed:totable()
    for b = 1, 3 do A.near(rms(f[b]) / rms(f0[b]), 10 ^ 0.3, 1e-5) end
    A.raises(function() augment.gain(batch(2, 4, 1), random.stream(1), { min_db = 3, max_db = -3 }) end,
        "max_db -3 < min_db 3")
end)

-- The circular shift s with after[i] = before[i - s] (1-based, mod n), or nil.
local function find_shift(after, before)
    local n = #before
    for s = 0, n - 1 do
        local ok = true
        for i = 1, n do
            if after[i] ~= before[(i - 1 - s) % n + 1] then ok = false; break end
        end
        if ok then return s end
    end
    return nil
end

test("time_shift: every row is a circular rotation of itself, within max_fraction", function()
    local B, N = 10, 64
    local wave, w0 = batch(B, N, 7)
    augment.time_shift(wave, random.stream(3), { max_fraction = 0.25 })
    local w = wave:totable()
    local moved = 0
    for b = 1, B do
        local s = find_shift(w[b], w0[b])
        A.truthy(s, "row " .. b .. " is not a rotation of the original row")
        local signed = s > N // 2 and s - N or s
        A.truthy(math.abs(signed) <= 16, "row " .. b .. " shifted by " .. signed)
        if s ~= 0 then moved = moved + 1 end
    end
    A.truthy(moved >= B // 2, "only " .. moved .. " rows shifted")
    local still, s0 = batch(3, 16, 8)
    augment.time_shift(still, random.stream(3), { max_fraction = 0 })
    A.eq(still:totable(), s0)
end)

-- Checks one sample {F, T} after spec_mask against the original: changed
-- cells hold the original's mean and form whole frequency rows or whole
-- time columns; returns the number of masked rows and columns.
local function check_masks(after, before, F, Tn)
    local sum = 0
    for f = 1, F do for t = 1, Tn do sum = sum + before[f][t] end end
    local mean = sum / (F * Tn)
    local changed = {}
    for f = 1, F do
        changed[f] = {}
        for t = 1, Tn do
            changed[f][t] = after[f][t] ~= before[f][t]
            if changed[f][t] then A.near(after[f][t], mean, 1e-5, "masked cell " .. f .. "," .. t) end
        end
    end
    local rows, cols = {}, {}
    for f = 1, F do
        local all = true
        for t = 1, Tn do all = all and changed[f][t] end
        rows[f] = all
    end
    for t = 1, Tn do
        local all = true
        for f = 1, F do all = all and changed[f][t] end
        cols[t] = all
    end
    local nr, nc = 0, 0
    for f = 1, F do if rows[f] then nr = nr + 1 end end
    for t = 1, Tn do if cols[t] then nc = nc + 1 end end
    for f = 1, F do
        for t = 1, Tn do
            A.truthy(not changed[f][t] or rows[f] or cols[t], "cell " .. f .. "," .. t .. " outside a stripe")
        end
    end
    return nr, nc
end

local function spec(shape, seed)
    local r = random.stream(seed, 1)
    local t = mt.empty(shape)
    local n = t:numel()
    local flat = {}
    for i = 1, n do flat[i] = r:normal(-40, 10) end
    return mt.tensor(flat):reshape(shape)
end

test("spec_mask on {B, F, T}: stripes set to the sample's mean, widths bounded", function()
    local B, F, Tn = 4, 8, 20
    local s = spec({ B, F, Tn }, 1)
    local s0 = s:totable()
    augment.spec_mask(s, random.stream(9), { freq_masks = 2, freq_width = 3, time_masks = 2, time_width = 5 })
    local s1 = s:totable()
    local total_rows, total_cols = 0, 0
    for b = 1, B do
        local nr, nc = check_masks(s1[b], s0[b], F, Tn)
        A.truthy(nr <= 2 * 3 and nc <= 2 * 5, "sample " .. b .. ": " .. nr .. " rows, " .. nc .. " columns")
        total_rows, total_cols = total_rows + nr, total_cols + nc
    end
    A.truthy(total_rows > 0 and total_cols > 0, "masks should have been drawn")
    -- No masks asked for: nothing changes.
    local u = spec({ 2, F, Tn }, 2)
    local u0 = u:totable()
    augment.spec_mask(u, random.stream(9), {})
    A.eq(u:totable(), u0)
end)

test("spec_mask on {B, 1, F, T} and bad shapes", function()
    local B, F, Tn = 3, 6, 12
    local s = spec({ B, 1, F, Tn }, 3)
    local s0 = s:totable()
    augment.spec_mask(s, random.stream(10), { freq_masks = 1, freq_width = 2, time_masks = 1, time_width = 4 })
    local s1 = s:totable()
    local any = 0
    for b = 1, B do
        local nr, nc = check_masks(s1[b][1], s0[b][1], F, Tn)
        A.truthy(nr <= 2 and nc <= 4, nr .. " rows, " .. nc .. " columns")
        any = any + nr + nc
    end
    A.truthy(any > 0, "masks should have been drawn")
    A.raises(function() augment.spec_mask(mt.zeros{ 2, 8 }, random.stream(1), {}) end,
        "expects {B, n_mels, T} or {B, 1, n_mels, T}", "2x8")
    A.raises(function() augment.spec_mask(mt.zeros{ 2, 1, 1, 8, 4 }, random.stream(1), {}) end, "2x1x1x8x4")
    A.raises(function() augment.spec_mask(mt.zeros{ 8 }, random.stream(1), {}) end, "expects a batch tensor")
end)

test("apply_batch runs gain, time_shift, mix in that order on one stream", function()
    local cfg = { gain = { min_db = -3, max_db = 3 }, time_shift = { max_fraction = 0.5 },
                  mix = { probability = 1, concentration = 1 } }
    local w1, t1 = batch(5, 30, 11), one_hot(5, 5)
    augment.apply_batch(w1, t1, cfg, random.stream(12))
    local w2, t2 = batch(5, 30, 11), one_hot(5, 5)
    local r = random.stream(12)
    augment.gain(w2, r, cfg.gain)
    augment.time_shift(w2, r, cfg.time_shift)
    augment.mix(w2, t2, r, cfg.mix)
    A.eq(w1:totable(), w2:totable())
    A.eq(t1:totable(), t2:totable())
    local w3, w0 = batch(5, 30, 11)
    augment.apply_batch(w3, one_hot(5, 5), {}, random.stream(12))
    A.eq(w3:totable(), w0)
end)

return T
