-- Plain-Lua reference computations for the tensor tests.
--
-- Arrays are nested Lua tables (a number is a 0-d array). Nothing here calls
-- machrt: expected values must come from an independent implementation.

local R = {}

function R.shape_of(x)
    local shape = {}
    while type(x) == "table" do
        shape[#shape + 1] = #x
        x = x[1]
    end
    return shape
end

function R.numel(shape)
    local n = 1
    for _, s in ipairs(shape) do n = n * s end
    return n
end

-- Row-major flat list of the elements.
function R.flatten(x, out)
    out = out or {}
    if type(x) == "table" then
        for i = 1, #x do R.flatten(x[i], out) end
    else
        out[#out + 1] = x
    end
    return out
end

-- Inverse of flatten.
function R.nest(flat, shape)
    if #shape == 0 then return flat[1] end
    local pos = 0
    local function build(d)
        local t = {}
        for i = 1, shape[d] do
            if d == #shape then
                pos = pos + 1
                t[i] = flat[pos]
            else
                t[i] = build(d + 1)
            end
        end
        return t
    end
    return build(1)
end

-- 1-based multi-index of 1-based flat position k, and back.
function R.unravel(k, shape)
    local idx = {}
    k = k - 1
    for d = #shape, 1, -1 do
        idx[d] = k % shape[d] + 1
        k = k // shape[d]
    end
    return idx
end

function R.ravel(idx, shape)
    local k = 0
    for d = 1, #shape do k = k * shape[d] + (idx[d] - 1) end
    return k + 1
end

function R.at(x, idx)
    for d = 1, #idx do x = x[idx[d]] end
    return x
end

-- Builds an array of the given shape whose element at idx is f(idx, k),
-- k being the 1-based row-major position.
function R.gen(shape, f)
    local n = R.numel(shape)
    local flat = {}
    for k = 1, n do flat[k] = f(R.unravel(k, shape), k) end
    return R.nest(flat, shape)
end

-- Deterministic test data: multiples of 1/8 in [-3.75, 3.75]. They are exact
-- in float32, and so are short sums and products of them, which keeps the
-- expected values free of rounding. For up to 61 elements they are distinct
-- (37 is invertible mod 61), so argmax/argmin are unambiguous.
function R.values(shape, salt)
    salt = salt or 0
    return R.gen(shape, function(_, k)
        return (((k + salt) * 37) % 61 - 30) / 8
    end)
end

-- Strictly positive test data (for log, sqrt, pow and division).
function R.positive(shape, salt)
    salt = salt or 0
    return R.gen(shape, function(_, k)
        return (((k + salt) * 37) % 61 + 1) / 16
    end)
end

function R.map(x, f)
    if type(x) ~= "table" then return f(x) end
    local t = {}
    for i = 1, #x do t[i] = R.map(x[i], f) end
    return t
end

-- numpy broadcasting: align shapes on the right; sizes must match or be 1.
function R.broadcast_shape(a, b)
    local n = math.max(#a, #b)
    local out = {}
    for i = 1, n do
        local sa = a[#a - n + i] or 1
        local sb = b[#b - n + i] or 1
        if sa ~= sb and sa ~= 1 and sb ~= 1 then return nil end
        out[i] = (sa == 1) and sb or sa
    end
    return out
end

-- Index into an operand of shape `shape` for output index `out_idx` under
-- broadcasting.
local function source_index(out_idx, shape)
    local idx = {}
    local lead = #out_idx - #shape
    for d = 1, #shape do
        idx[d] = (shape[d] == 1) and 1 or out_idx[lead + d]
    end
    return idx
end

-- Elementwise f(a, b) with broadcasting; a and b are arrays or numbers.
function R.binary(a, b, f)
    local sa, sb = R.shape_of(a), R.shape_of(b)
    local so = assert(R.broadcast_shape(sa, sb), "reference: shapes do not broadcast")
    return R.gen(so, function(idx)
        return f(R.at(a, source_index(idx, sa)), R.at(b, source_index(idx, sb)))
    end)
end

-- Broadcast `a` to `shape` (what expand and copy do).
function R.expand(a, shape)
    local sa = R.shape_of(a)
    return R.gen(shape, function(idx) return R.at(a, source_index(idx, sa)) end)
end

-- Applies fn(list of the values along dim d) and removes dimension d.
function R.along(x, d, fn)
    local shape = R.shape_of(x)
    local out_shape = {}
    for i = 1, #shape do
        if i ~= d then out_shape[#out_shape + 1] = shape[i] end
    end
    return R.gen(out_shape, function(oidx)
        local idx, vals = {}, {}
        for i = 1, d - 1 do idx[i] = oidx[i] end
        for i = d + 1, #shape do idx[i] = oidx[i - 1] end
        for j = 1, shape[d] do
            idx[d] = j
            vals[j] = R.at(x, idx)
        end
        return fn(vals)
    end)
end

-- Reductions over a plain list of numbers.
function R.sum(list)
    local s = 0
    for _, v in ipairs(list) do s = s + v end
    return s
end

function R.mean(list) return R.sum(list) / #list end

function R.argmax(list)
    local best = 1
    for i = 2, #list do if list[i] > list[best] then best = i end end
    return best
end

function R.argmin(list)
    local best = 1
    for i = 2, #list do if list[i] < list[best] then best = i end end
    return best
end

function R.max(list) return list[R.argmax(list)] end
function R.min(list) return list[R.argmin(list)] end

-- out[idx] = x[idx'] with idx'[order[i]] = idx[i] (torch.permute).
function R.permute(x, order)
    local shape = R.shape_of(x)
    local out_shape = {}
    for i = 1, #order do out_shape[i] = shape[order[i]] end
    return R.gen(out_shape, function(idx)
        local src = {}
        for i = 1, #order do src[order[i]] = idx[i] end
        return R.at(x, src)
    end)
end

function R.transpose(x, a, b)
    local order = {}
    for i = 1, #R.shape_of(x) do order[i] = i end
    order[a], order[b] = order[b], order[a]
    return R.permute(x, order)
end

-- numpy matmul: 1-D operands are promoted (row on the left, column on the
-- right) and that dimension is dropped afterwards; leading (batch) dims
-- broadcast. The inner products are triple loops over Lua tables.
function R.matmul(a, b)
    local sa, sb = R.shape_of(a), R.shape_of(b)
    local a_vec, b_vec = #sa == 1, #sb == 1
    if a_vec then a = { a }; sa = { 1, sa[1] } end
    if b_vec then
        b = R.map(b, function(v) return { v } end)
        sb = { sb[1], 1 }
    end
    local m, k, n = sa[#sa - 1], sa[#sa], sb[#sb]
    assert(sb[#sb - 1] == k, "reference: inner dimensions differ")
    local ba, bb = {}, {}
    for i = 1, #sa - 2 do ba[i] = sa[i] end
    for i = 1, #sb - 2 do bb[i] = sb[i] end
    local batch = assert(R.broadcast_shape(ba, bb), "reference: batch dims do not broadcast")

    local out_shape = {}
    for i = 1, #batch do out_shape[i] = batch[i] end
    if not a_vec then out_shape[#out_shape + 1] = m end
    if not b_vec then out_shape[#out_shape + 1] = n end

    return R.gen(out_shape, function(idx)
        local bidx = {}
        for i = 1, #batch do bidx[i] = idx[i] end
        local i = a_vec and 1 or idx[#batch + 1]
        local j = b_vec and 1 or idx[#idx]
        local ia = source_index(bidx, ba)
        local ib = source_index(bidx, bb)
        local am, bm = R.at(a, ia), R.at(b, ib)
        local s = 0
        for p = 1, k do s = s + am[i][p] * bm[p][j] end
        return s
    end)
end

-- Lua 5.4's math library has no hyperbolic functions.
function R.tanh(x)
    if x > 20 then return 1 elseif x < -20 then return -1 end
    local e = math.exp(2 * x)
    return (e - 1) / (e + 1)
end

function R.sigmoid(x) return 1 / (1 + math.exp(-x)) end

-- The float32 value nearest to x, as a Lua float (independent of machrt:
-- string.pack rounds through a C float).
function R.f32(x) return (string.unpack("<f", string.pack("<f", x))) end

return R
