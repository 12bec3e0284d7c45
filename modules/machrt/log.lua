-- Progress output for long runs: a live bar on a terminal, plain lines when
-- the output goes to a file or a pipe (CI logs, `| tee`), and tables.
--
--   local log = require "machrt.log"
--   local bar = log.progress{title = "epoch 1/5", total = 24, stream = io.stderr}
--   bar:update(step, {loss = 0.41, lr = 1e-3}, samples)   -- after each step
--   bar:finish({val_f1 = 0.9})
--   log.table({"epoch", "f1"}, rows)                       -- aligned text table
--   log.info("message")                                    -- timestamped line
--   log.once("mel", "message")                             -- the first time a key is given only

local mt = require "machrt"
local sys = require "machrt.sys"

local M = {}

M.stream = io.stdout

local function now() return mt.clock() end

local function fmt_seconds(s)
    if s ~= s or s == math.huge then return "?" end
    s = math.floor(s + 0.5)
    if s >= 3600 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
    if s >= 60 then return string.format("%dm%02ds", s // 60, s % 60) end
    return string.format("%ds", s)
end
M.fmt_seconds = fmt_seconds

local function fmt_value(v)
    if type(v) ~= "number" then return tostring(v) end
    if v ~= 0 and (math.abs(v) < 1e-3 or math.abs(v) >= 1e5) then return string.format("%.2e", v) end
    return string.format("%.4f", v)
end

local function fields_text(fields, order)
    local parts = {}
    for _, k in ipairs(order or {}) do
        if fields[k] ~= nil then parts[#parts + 1] = k .. " " .. fmt_value(fields[k]) end
    end
    return table.concat(parts, "  ")
end

function M.info(fmt, ...)
    local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
    M.stream:write(os.date("[%H:%M:%S] "), msg, "\n")
    M.stream:flush()
end

-- Keys log.once has said, for the life of the process: a notice about the
-- settings is said once per run, not per fold or per model built.
local said = {}

--- log.info the first time `key` is given; later calls say nothing.
--- Returns true when it said it.
function M.once(key, fmt, ...)
    if said[key] then return false end
    said[key] = true
    M.info(fmt, ...)
    return true
end

local Progress = {}
Progress.__index = Progress

--- A progress display for `total` steps. On a terminal (isatty) the line is
--- redrawn in place; otherwise a line every `every` steps (default: about
--- 10 per run) and at the end, so a pipe or a log file never holds a
--- carriage return. opts.unit names what update's `samples` count
--- (default "samples": "<rate> samples/s"); opts.start: the mt.clock() time
--- the work began (default now).
function M.progress(opts)
    local stream = opts.stream or M.stream
    local tty = opts.tty
    -- Any other stream (a file) is no terminal.
    local fd = stream == io.stderr and 2 or stream == io.stdout and 1
    if tty == nil then tty = fd and sys.isatty(fd) or false end
    return setmetatable({
        title = opts.title or "", total = opts.total, stream = stream, tty = tty,
        every = opts.every or math.max(1, opts.total // 10), start = opts.start or now(), samples = 0,
        order = opts.fields or { "loss", "lr" }, width = opts.width or 24, last_draw = -1,
        unit = opts.unit or "samples",
    }, Progress)
end

function Progress:text(step, fields)
    local elapsed = now() - self.start
    local rate = self.samples > 0 and self.samples / math.max(elapsed, 1e-9) or 0
    local eta = step > 0 and elapsed / step * (self.total - step) or math.huge
    local f = fields_text(fields or {}, self.order)
    return string.format("%s %d/%d  %s  %.1f %s/s  %s %s", self.title, step, self.total, f,
                         rate, self.unit, step < self.total and "ETA" or "in", step < self.total and fmt_seconds(eta)
                         or fmt_seconds(elapsed))
end

function Progress:update(step, fields, samples)
    self.samples = self.samples + (samples or 0)
    if self.tty then
        local t = now()
        if step < self.total and t - self.last_draw < 0.1 then return end
        self.last_draw = t
        local filled = math.floor(self.width * step / math.max(self.total, 1))
        local bar = string.rep("#", filled) .. string.rep(".", self.width - filled)
        self.stream:write("\r\27[K[", bar, "] ", self:text(step, fields))
        self.stream:flush()
    elseif step % self.every == 0 or step == self.total then
        self.stream:write(os.date("[%H:%M:%S] "), self:text(step, fields), "\n")
        self.stream:flush()
    end
end

--- Ends the display (a newline on a terminal) and returns the elapsed seconds.
function Progress:finish()
    if self.tty then self.stream:write("\n") end
    self.stream:flush()
    return now() - self.start
end

--- An aligned text table: header (list of names) and rows (lists of values).
function M.table(header, rows, stream)
    stream = stream or M.stream
    local cells, widths = {}, {}
    local all = { header }
    for _, r in ipairs(rows) do all[#all + 1] = r end
    for i, r in ipairs(all) do
        cells[i] = {}
        for j = 1, #header do
            local v = r[j]
            local s = type(v) == "number" and (math.type(v) == "integer" and tostring(v) or fmt_value(v))
                or tostring(v == nil and "" or v)
            cells[i][j] = s
            widths[j] = math.max(widths[j] or 0, #s)
        end
    end
    for i, r in ipairs(cells) do
        local parts = {}
        for j, s in ipairs(r) do parts[j] = string.rep(" ", widths[j] - #s) .. s end
        stream:write("  ", table.concat(parts, "  "), "\n")
        if i == 1 then
            local rule = {}
            for j = 1, #header do rule[j] = string.rep("-", widths[j]) end
            stream:write("  ", table.concat(rule, "  "), "\n")
        end
    end
    stream:flush()
end

return M
