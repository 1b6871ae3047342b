-- wrk script for bench/http_load.py: one target per run (BENCH_TARGET), random pages and filters per request.
--
-- BENCH_DATA names a Lua file written by http_load.py (`return { token = …, cookie = …, … }`): the API token,
-- the staff session cookie, the page counts, sampled customer ids, search terms, due-date range and ETags.
-- Every response's status and Server-Timing query count are tallied per thread; done() prints one line,
-- "BENCH_RESULT {json}", that the harness parses.

local target = os.getenv("BENCH_TARGET") or "health"
local data = dofile(os.getenv("BENCH_DATA"))
local threads = {}

-- Sent with every request: the app runs as in production behind a TLS proxy (gunicorn trusts
-- X-Forwarded-Proto from 127.0.0.1), so the __Host- session cookie and HTTPS-only redirects behave as deployed.
local base_headers = { ["X-Forwarded-Proto"] = "https", ["Accept"] = "text/html,application/json" }

local function headers(extra)
  local h = {}
  for k, v in pairs(base_headers) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function pick(list) return list[math.random(#list)] end

local api = { ["Authorization"] = "Bearer " .. data.token, ["Accept"] = "application/json" }
local staff = { ["Cookie"] = data.cookie }
local sizes = { 25, 50, 100 }
local sorts = { "name", "account", "newest", "oldest", "status" }

-- Per thread (each wrk thread has its own Lua state): the next page's link of the walk in progress, if any
-- (the whole link, since a cursor is only valid with the ordering, filters and page size it was made for).
local cursor = nil

local function api_customers()
  if cursor and math.random() < 0.5 then  -- about half the requests walk on by cursor, half jump to a random page
    return cursor, api
  end
  cursor = nil
  local size = pick(sizes)
  local pages = math.max(1, math.ceil(data.customers / size))
  local ordering = pick({ "name", "-name", "id", "-id", "account_number" })
  return string.format("/api/customers/?page=%d&page_size=%d&ordering=%s", math.random(pages), size, ordering), api
end

local function api_invoices()
  local day = math.random(0, data.due_span)
  local width = math.random(1, 45)
  local status = pick(data.invoice_statuses)
  return string.format("/api/billing/invoices/?status=%s&due_from=%s&due_to=%s&page=%d",
    status, data.due_dates[day + 1], data.due_dates[math.min(day + width, data.due_span) + 1],
    math.random(1, 3)), api
end

local function staff_list()
  if cursor and math.random() < 0.8 then
    return cursor, staff
  end
  cursor = nil
  local status = pick({ "", "", "active", "suspended", "closed" })
  return string.format("/customers/?sort=%s&status=%s", pick(sorts), status), staff
end

local function staff_search()
  return "/customers/?q=" .. pick(data.terms), staff
end

local function customer_detail()
  return "/customers/" .. pick(data.ids), staff
end

local function dashboard()
  return "/", staff
end

local function etag()
  local entry = pick(data.etags)
  local h = { ["If-None-Match"] = entry.etag }
  for k, v in pairs(api) do h[k] = v end
  return entry.path, h
end

local function bare()
  return "/", {}
end

local function health()
  return "/health/", {}
end

local targets = {
  api_customers = api_customers, api_invoices = api_invoices, staff_list = staff_list,
  staff_search = staff_search, customer_detail = customer_detail, dashboard = dashboard,
  etag_304 = etag, health = health, bare = bare,
}
local make = targets[target]
-- Only the cursor walks read the body (for the next page's cursor).
local walks = (target == "api_customers" or target == "staff_list")

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  statuses = {}
  q_count, q_sum, q_max = 0, 0, 0
end

function request()
  local path, extra = make()
  return wrk.format("GET", path, headers(extra))
end

local function header(h, name)
  local v = h[name]
  if v then return v end
  local lower = name:lower()
  for k, value in pairs(h) do
    if k:lower() == lower then return value end
  end
  return nil
end

function response(status, h, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  local timing = header(h, "Server-Timing")
  if timing then
    local n = tonumber(timing:match('desc="(%d+) queries"'))
    if n then
      q_count, q_sum = q_count + 1, q_sum + n
      if n > q_max then q_max = n end
    end
  end
  if walks then
    if status == 200 and body then
      if target == "api_customers" then
        cursor = body:match('"next_cursor": *"(/[^"]+)"')
      else
        cursor = body:match('href="(/customers/%?[^"]*after=[^"]*)"')
        if cursor then cursor = cursor:gsub("&amp;", "&") end
      end
    else
      cursor = nil
    end
  end
end

local function json(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do table.insert(parts, string.format("%q:%s", tostring(k), json(v))) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  if type(value) == "number" and (value ~= value or value == math.huge) then return "null" end
  return tostring(value)
end

function done(summary, latency, _requests)
  local all, count, sum, max = {}, 0, 0, 0
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses") or {}) do all[k] = (all[k] or 0) + v end
    count = count + (thread:get("q_count") or 0)
    sum = sum + (thread:get("q_sum") or 0)
    max = math.max(max, thread:get("q_max") or 0)
  end
  local e = summary.errors
  local result = {
    requests = summary.requests, duration_us = summary.duration,
    p50_us = latency:percentile(50), p95_us = latency:percentile(95), p99_us = latency:percentile(99),
    mean_us = latency.mean, max_us = latency.max,
    connect = e.connect, read = e.read, write = e.write, status = e.status, timeout = e.timeout,
    statuses = all, queries_counted = count, queries_sum = sum, queries_max = max,
  }
  io.write("BENCH_RESULT " .. json(result) .. "\n")
end
