-- Seeded random streams for scripts: the same Philox 4x32-10 generator as the
-- tensor fills, keyed by (seed, stream id...), so that a value depends only on
-- the seed and where it is drawn (epoch, batch, row), never on the order in
-- which workers run or on Lua's global math.random.
--
--   local random = require "machrt.random"
--   local r = random.stream(seed, epoch, row)   -- any number of integer ids
--   r:uniform()  r:uniform(a, b)  r:integer(lo, hi)  r:normal(mean, std)
--   r:gamma(shape)  r:beta(a, b)  r:permutation(n)  r:bernoulli(p)
--   random.draw_seed()                          -- a fresh seed (seed: -1)

local mt = require "machrt"

local M = {}

local Stream = {}
Stream.__index = Stream

-- Folds the ids into one 64-bit key through Philox itself (a strong mix).
local function derive_key(seed, ...)
    local key = seed
    for i = 1, select("#", ...) do
        local id = select(i, ...)
        local a, b = mt.philox(id, key)
        key = (a << 32) | b
    end
    return key
end

--- A stream for (seed, ids...): integers (epoch, batch, row, ...).
function M.stream(seed, ...)
    if math.type(seed) ~= "integer" then
        error("random.stream: seed must be an integer, got " .. tostring(seed), 2)
    end
    for i = 1, select("#", ...) do
        if math.type(select(i, ...)) ~= "integer" then
            error(string.format("random.stream: id %d must be an integer, got %s", i,
                                tostring(select(i, ...))), 2)
        end
    end
    return setmetatable({ key = derive_key(seed, ...), counter = 0, buf = {}, pos = 5 }, Stream)
end

-- The next uint32 of the stream.
function Stream:u32()
    if self.pos > 4 then
        local b = self.buf
        b[1], b[2], b[3], b[4] = mt.philox(self.counter, self.key)
        self.counter = self.counter + 1
        self.pos = 1
    end
    local v = self.buf[self.pos]
    self.pos = self.pos + 1
    return v
end

--- Uniform in [0, 1) with 53 random bits, or in [a, b).
function Stream:uniform(a, b)
    local hi, lo = self:u32() >> 5, self:u32() >> 6
    local u = (hi * 67108864.0 + lo) / 9007199254740992.0
    if a == nil then return u end
    return a + (b - a) * u
end

--- An integer in [lo, hi], each equally likely.
function Stream:integer(lo, hi)
    if hi < lo then error(string.format("random: empty range [%d, %d]", lo, hi), 2) end
    return lo + math.floor(self:uniform() * (hi - lo + 1))
end

function Stream:bernoulli(p) return self:uniform() < p end

--- Normal(mean, std) by Box-Muller (one value per two uniforms: simple and
--- stateless, so a stream's k-th draw does not depend on earlier parity).
function Stream:normal(mean, std)
    local u1 = 1.0 - self:uniform() -- (0, 1]: log is finite
    local u2 = self:uniform()
    local z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return (mean or 0) + (std or 1) * z
end

--- Gamma(shape, 1): Marsaglia and Tsang's method; shape < 1 by boosting.
function Stream:gamma(shape)
    if not (shape > 0) then error("random.gamma: shape must be positive, got " .. tostring(shape), 2) end
    if shape < 1 then
        local u = 1.0 - self:uniform()
        return self:gamma(shape + 1) * u ^ (1 / shape)
    end
    local d = shape - 1 / 3
    local c = 1 / math.sqrt(9 * d)
    while true do
        local x, v
        repeat
            x = self:normal()
            v = 1 + c * x
        until v > 0
        v = v * v * v
        local u = 1.0 - self:uniform()
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v) then return d * v end
    end
end

-- log(Gamma(shape, 1)), drawn as Stream:gamma draws it (same uniforms in the
-- same order) but kept in logs: for a small shape, u ^ (1 / shape) underflows
-- to 0 although its log is finite.
local function log_gamma_draw(self, shape)
    if shape < 1 then
        local u = 1.0 - self:uniform()
        return log_gamma_draw(self, shape + 1) + math.log(u) / shape
    end
    return math.log(self:gamma(shape))
end

--- Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b); for a or b
--- below 1 the ratio is taken from the logs (X and Y may both underflow to
--- 0, and 0 / 0 is NaN).
function Stream:beta(a, b)
    if a >= 1 and b >= 1 then
        local x, y = self:gamma(a), self:gamma(b)
        return x / (x + y)
    end
    if not (a > 0) or not (b > 0) then
        error(string.format("random.beta: parameters must be positive, got %s, %s",
                            tostring(a), tostring(b)), 2)
    end
    local lx, ly = log_gamma_draw(self, a), log_gamma_draw(self, b)
    return 1.0 / (1.0 + math.exp(ly - lx))
end

--- A random order of 1..n (Fisher-Yates).
function Stream:permutation(n)
    local p = {}
    for i = 1, n do p[i] = i end
    for i = n, 2, -1 do
        local j = self:integer(1, i)
        p[i], p[j] = p[j], p[i]
    end
    return p
end

--- A fresh non-negative seed below 2^31 (for `seed: -1`), from the clock and
--- the process, not from any seeded state.
function M.draw_seed()
    local t = math.floor(mt.clock() * 1e6) ~ math.floor(os.time() * 1000003)
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    local a = mt.philox(t, addr)
    return a & 0x7fffffff
end

return M
