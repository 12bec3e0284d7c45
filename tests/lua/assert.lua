-- Assertion helpers for the Lua tests (loaded with `require "assert"`;
-- tests/lua/run.lua puts tests/lua/?.lua on package.path).
--
-- Every helper raises a plain string error at the caller's level, so the
-- failure report points at the line of the test that made the assertion.

local A = {}

local function fmt(v)
    if math.type(v) == "float" then return string.format("%.9g", v) end
    if type(v) ~= "table" then return tostring(v) end
    local mt = getmetatable(v)
    if mt and mt.__tostring then return tostring(v) end
    local parts = {}
    for i = 1, #v do parts[i] = fmt(v[i]) end
    for k, x in pairs(v) do
        if math.type(k) ~= "integer" or k < 1 or k > #v then
            parts[#parts + 1] = tostring(k) .. " = " .. fmt(x)
        end
    end
    return "{" .. table.concat(parts, ", ") .. "}"
end
A.fmt = fmt

local function fail(msg, what, level)
    error((msg and (msg .. ": ") or "") .. what, (level or 2) + 1)
end

-- Structural equality: tables are compared key by key (so shapes and
-- nested value tables can be compared directly), everything else with ==.
local function deep_eq(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do
        if not deep_eq(v, b[k]) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

function A.eq(a, b, msg)
    if not deep_eq(a, b) then
        fail(msg, "expected " .. fmt(b) .. ", got " .. fmt(a))
    end
end

function A.truthy(v, msg)
    if not v then fail(msg, "expected a true value, got " .. fmt(v)) end
    return v
end

-- |a - b| <= tol * (1 + |b|): absolute near zero, relative for large values.
local function close(a, b, tol)
    if a == b then return true end                    -- also equal infinities
    if a ~= a and b ~= b then return true end         -- both NaN
    return math.abs(a - b) <= tol * (1 + math.abs(b))
end

function A.near(a, b, tol, msg)
    tol = tol or 1e-5
    if type(a) ~= "number" then
        fail(msg, "expected a number near " .. fmt(b) .. ", got " .. type(a) .. " " .. fmt(a))
    end
    if not close(a, b, tol) then
        fail(msg, string.format("expected %.9g (tol %g), got %.9g", b, tol, a))
    end
end

local function shape_of(x)
    local shape = {}
    while type(x) == "table" do
        shape[#shape + 1] = #x
        x = x[1]
    end
    return shape
end

local function flatten(x, out)
    out = out or {}
    if type(x) == "table" then
        for i = 1, #x do flatten(x[i], out) end
    else
        out[#out + 1] = x
    end
    return out
end

-- The 1-based multi-index of flat (row-major) position k, for messages.
local function index_str(k, shape)
    local idx = {}
    k = k - 1
    for d = #shape, 1, -1 do
        idx[d] = k % shape[d] + 1
        k = k // shape[d]
    end
    return "(" .. table.concat(idx, ", ") .. ")"
end

function A.shape_eq(t, shape, msg)
    local got = t:shape()
    if not deep_eq(got, shape) then
        fail(msg, "expected shape " .. fmt(shape) .. ", got " .. fmt(got))
    end
end

-- Compares a tensor with a nested Lua table (or a number for a 0-d tensor):
-- same shape, and every element near the expected one.
function A.tensor_near(t, expected, tol, msg)
    tol = tol or 1e-5
    local shape = shape_of(expected)
    local got_shape = t:shape()
    if not deep_eq(got_shape, shape) then
        fail(msg, "expected shape " .. fmt(shape) .. ", got " .. fmt(got_shape))
    end
    local got = flatten(t:totable())
    local want = flatten(expected)
    if #got ~= #want then
        fail(msg, string.format("totable gave %d elements, expected %d", #got, #want))
    end
    for k = 1, #want do
        if type(got[k]) ~= "number" or not close(got[k], want[k], tol) then
            fail(msg, string.format("at %s: expected %.9g (tol %g), got %s",
                index_str(k, shape), want[k], tol, fmt(got[k])))
        end
    end
end

-- Asserts that fn() raises an error whose message contains every given
-- pattern (tried first as a plain substring, then as a Lua pattern).
-- Returns the message so callers can check it further.
--
-- Note: write `local x = f(...) return x` rather than `return f(...)` in fn
-- when the message should name f: a tail call loses the function's name,
-- and Lua's "bad argument #n to 'name'" then reads "to '?'".
function A.raises(fn, ...)
    local ok, err = pcall(fn)
    if ok then fail(nil, "expected an error, but the call succeeded") end
    local msg = tostring(err)
    for i = 1, select("#", ...) do
        local pat = select(i, ...)
        local found = msg:find(pat, 1, true)
        if not found then
            local good, pos = pcall(string.find, msg, pat)
            found = good and pos
        end
        if not found then
            fail(nil, "error message " .. string.format("%q", msg) ..
                " does not contain " .. string.format("%q", pat))
        end
    end
    return msg
end

-- True when msg contains at least one of the plain substrings in list.
function A.contains_any(msg, list, what)
    for _, s in ipairs(list) do
        if msg:find(s, 1, true) then return true end
    end
    fail(what, string.format("%q contains none of %s", msg, fmt(list)))
end

-- Ends the current test as skipped. The harness recognises the marker field
-- (a field rather than a metatable, so it works even if this file is loaded
-- twice through dofile).
function A.skip(reason)
    error({ machrt_test_skip = true, reason = tostring(reason or "skipped") }, 0)
end

function A.is_skip(err)
    return type(err) == "table" and err.machrt_test_skip == true
end

return A
