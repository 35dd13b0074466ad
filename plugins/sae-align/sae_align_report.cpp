#include "sae_align_report.hpp"

#include <aquin/sdk/json.hpp>
#include <aquin/sdk/sae_json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace aquin::sae_align {

namespace {

using json::Alloc;
using json::num;
using json::put;
using json::str;

// The matched cosines of A's matched features, sorted ascending.
std::vector<double> matched_sorted(const AlignResult& r) {
  std::vector<double> v;
  v.reserve(static_cast<std::size_t>(r.n_matched));
  for (float c : r.matched_cos)
    if (!std::isnan(c)) v.push_back(c);
  std::sort(v.begin(), v.end());
  return v;
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
}

std::vector<int64_t> histogram(const std::vector<double>& v) {
  std::vector<int64_t> h(kHistogramBins, 0);
  for (double x : v) {
    int bin = static_cast<int>(std::floor((x + 1.0) / 2.0 * kHistogramBins));
    h[static_cast<std::size_t>(std::clamp(bin, 0, kHistogramBins - 1))]++;
  }
  return h;
}

rapidjson::Value histogram_json(const std::vector<double>& v, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "lo", num(-1.0), a);
  put(o, "hi", num(1.0), a);
  put(o, "bins", rapidjson::Value(kHistogramBins), a);
  rapidjson::Value edges(rapidjson::kArrayType);
  for (int i = 0; i <= kHistogramBins; ++i) edges.PushBack(num(-1.0 + 2.0 * i / kHistogramBins), a);
  put(o, "edges", std::move(edges), a);
  put(o, "counts", json::int_array(histogram(v), a), a);
  return o;
}

// Figures shared by the A–B summary and the A–C baseline.
struct Summary {
  std::vector<double> sorted;
  double mean = 0, median = 0, upper = 0, gap = 0;
};

Summary summarise(const AlignResult& r) {
  Summary s;
  s.sorted = matched_sorted(r);
  const double n = static_cast<double>(r.n_matched);
  s.mean = r.total / n;
  s.median = quantile_sorted(s.sorted, 0.5);
  s.upper = r.upper_bound_total / n;
  s.gap = std::max(0.0, s.upper - s.mean);
  return s;
}

void put_summary(rapidjson::Value& o, const AlignResult& r, const Summary& s, Alloc& a) {
  put(o, "mean_matched_cosine", num(s.mean), a);
  put(o, "median", num(s.median), a);
  put(o, "mean_max_cosine_a_to_b", num(mean_of(r.best_a)), a);
  put(o, "mean_max_cosine_b_to_a", num(mean_of(r.best_b)), a);
  put(o, "n_matched", rapidjson::Value(r.n_matched), a);
  put(o, "upper_bound", num(s.upper), a);
  put(o, "gap", num(s.gap), a);
  put(o, "total_matched_cosine", num(r.total), a);
  put(o, "upper_bound_total", num(r.upper_bound_total), a);
  put(o, "n_a", rapidjson::Value(r.n_a), a);
  put(o, "n_b", rapidjson::Value(r.n_b), a);
  put(o, "n_unmatched_a", rapidjson::Value(r.n_a - r.n_matched), a);
  put(o, "n_unmatched_b", rapidjson::Value(r.n_b - r.n_matched), a);
  put(o, "candidates", r.candidates > 0 ? rapidjson::Value(r.candidates) : rapidjson::Value(rapidjson::kNullType), a);
  put(o, "n_edges", rapidjson::Value(r.n_edges), a);
  put(o, "n_fallback", rapidjson::Value(r.n_fallback), a);
}

std::string f3(double v) { return fmt_num(v, 3); }

std::size_t listed(int64_t top, std::size_t n) {
  return top == 0 ? n : std::min(n, static_cast<std::size_t>(top));
}

}  // namespace

double quantile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

double percentile_of(const std::vector<double>& sorted, double x) {
  if (sorted.empty()) return std::nan("");
  const auto n = std::upper_bound(sorted.begin(), sorted.end(), x) - sorted.begin();
  return 100.0 * static_cast<double>(n) / static_cast<double>(sorted.size());
}

void build_report(const Inputs& in, Result& r) {
  auto& a = r.doc.GetAllocator();
  r.card = "saeAlign";
  const AlignResult& ab = *in.ab;
  const Summary s = summarise(ab);
  std::optional<Summary> ns;
  double p05 = std::nan("");
  int64_t below = 0;
  if (in.ac) {
    ns = summarise(*in.ac);
    p05 = quantile_sorted(ns->sorted, 0.05);
    below = std::lower_bound(s.sorted.begin(), s.sorted.end(), p05) - s.sorted.begin();
  }

  put(r.doc, "sae_a", sae_json(*in.a, a), a);
  put(r.doc, "sae_b", sae_json(*in.b, a), a);
  put(r.doc, "null", in.null_sae ? sae_json(*in.null_sae, a) : rapidjson::Value(rapidjson::kNullType), a);
  put(r.doc, "method", str(ab.method, a), a);
  put(r.doc, "method_note",
      str(ab.method == "exact"
              ? "optimal one-to-one assignment on the full cosine matrix (shortest augmenting paths, as "
                "scipy.optimize.linear_sum_assignment); upper_bound is the optimum itself"
              : "optimal assignment over each feature's " + std::to_string(ab.candidates) +
                    " most similar partners (both directions); features it could not match were matched "
                    "exactly among those left. upper_bound is a certified bound of the dense optimum (LP dual); "
                    "gap = upper_bound - mean_matched_cosine is at most what the candidate restriction lost",
          a),
      a);
  put(r.doc, "similarity", str("cosine of unit-normalised W_dec rows (decoder directions), fp32", a), a);
  rapidjson::Value summary(rapidjson::kObjectType);
  put_summary(summary, ab, s, a);
  put(r.doc, "summary", std::move(summary), a);
  put(r.doc, "histogram", histogram_json(s.sorted, a), a);

  // A's matched features by matched cosine.
  std::vector<int64_t> by_cos;
  for (int64_t i = 0; i < ab.n_a; ++i)
    if (ab.match_a[static_cast<std::size_t>(i)] >= 0) by_cos.push_back(i);
  std::stable_sort(by_cos.begin(), by_cos.end(), [&](int64_t x, int64_t y) {
    return ab.matched_cos[static_cast<std::size_t>(x)] > ab.matched_cos[static_cast<std::size_t>(y)];
  });
  auto match_json = [&](int64_t i, bool with_null) {
    const auto k = static_cast<std::size_t>(i);
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "a", rapidjson::Value(i), a);
    put(o, "b", rapidjson::Value(ab.match_a[k]), a);
    put(o, "cosine", num(ab.matched_cos[k]), a);
    put(o, "best_b", rapidjson::Value(ab.best_a_idx[k]), a);
    put(o, "best_cosine", num(ab.best_a[k]), a);
    if (with_null) put(o, "null_percentile", ns ? num(percentile_of(ns->sorted, ab.matched_cos[k])) : rapidjson::Value(), a);
    return o;
  };
  const std::size_t n_list = listed(in.top, by_cos.size());
  rapidjson::Value strongest(rapidjson::kArrayType), weakest(rapidjson::kArrayType);
  for (std::size_t k = 0; k < n_list; ++k) strongest.PushBack(match_json(by_cos[k], false), a);
  for (std::size_t k = 0; k < n_list; ++k) weakest.PushBack(match_json(by_cos[by_cos.size() - 1 - k], true), a);
  put(r.doc, "strongest", std::move(strongest), a);
  put(r.doc, "weakest", std::move(weakest), a);

  // B's features least like any of A's: candidates for what the fine-tune created.
  std::vector<int64_t> new_b(static_cast<std::size_t>(ab.n_b));
  std::iota(new_b.begin(), new_b.end(), 0);
  std::stable_sort(new_b.begin(), new_b.end(), [&](int64_t x, int64_t y) {
    return ab.best_b[static_cast<std::size_t>(x)] < ab.best_b[static_cast<std::size_t>(y)];
  });
  rapidjson::Value new_in_b(rapidjson::kArrayType);
  const std::size_t n_new = listed(in.top, new_b.size());
  for (std::size_t k = 0; k < n_new; ++k) {
    const int64_t j = new_b[k];
    const auto jj = static_cast<std::size_t>(j);
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "b", rapidjson::Value(j), a);
    put(o, "best_cosine", num(ab.best_b[jj]), a);
    put(o, "best_a", rapidjson::Value(ab.best_b_idx[jj]), a);
    const int64_t m = ab.match_b[jj];
    put(o, "matched_a", m >= 0 ? rapidjson::Value(m) : rapidjson::Value(rapidjson::kNullType), a);
    put(o, "matched_cosine", m >= 0 ? num(ab.matched_cos[static_cast<std::size_t>(m)]) : rapidjson::Value(), a);
    new_in_b.PushBack(o, a);
  }
  put(r.doc, "new_in_b", std::move(new_in_b), a);

  // A's features left without a partner (A larger than B), least like any of B's first.
  std::vector<int64_t> lone;
  for (int64_t i = 0; i < ab.n_a; ++i)
    if (ab.match_a[static_cast<std::size_t>(i)] < 0) lone.push_back(i);
  std::stable_sort(lone.begin(), lone.end(), [&](int64_t x, int64_t y) {
    return ab.best_a[static_cast<std::size_t>(x)] < ab.best_a[static_cast<std::size_t>(y)];
  });
  rapidjson::Value unmatched(rapidjson::kArrayType);
  for (std::size_t k = 0; k < listed(in.top, lone.size()); ++k) {
    const auto i = static_cast<std::size_t>(lone[k]);
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "a", rapidjson::Value(lone[k]), a);
    put(o, "best_cosine", num(ab.best_a[i]), a);
    put(o, "best_b", rapidjson::Value(ab.best_a_idx[i]), a);
    unmatched.PushBack(o, a);
  }
  put(r.doc, "unmatched_a", std::move(unmatched), a);

  if (in.ac) {
    rapidjson::Value base(rapidjson::kObjectType);
    put(base, "method", str(in.ac->method, a), a);
    put_summary(base, *in.ac, *ns, a);
    put(base, "p05", num(p05), a);
    put(base, "n_below_p05", rapidjson::Value(below), a);
    put(base, "share_below_p05", num(static_cast<double>(below) / static_cast<double>(ab.n_matched)), a);
    put(base, "note",
        str("A vs the null SAE (same activations, another seed): matched cosines that training noise alone gives. "
            "n_below_p05 / share_below_p05: A-B matches below the null's 5th percentile (5% expected by chance); "
            "null_percentile in `weakest`: the share of null matches at or below that cosine",
            a),
        a);
    put(base, "histogram", histogram_json(ns->sorted, a), a);
    put(r.doc, "baseline", std::move(base), a);
  }
  rapidjson::Value tim(rapidjson::kObjectType);
  for (const auto& [k, v] : in.timings) put(tim, k, num(v), a);
  put(r.doc, "timings_s", std::move(tim), a);

  // Terminal.
  auto describe = [](const SaeInfo& si) {
    return si.path + " (" + si.format + ", " + si.architecture + (si.k > 0 ? " k=" + std::to_string(si.k) : "") +
           ", d_sae " + std::to_string(si.d_sae) + ", " + (si.hook.empty() ? "hook unknown" : si.hook) + ")";
  };
  r.headline.push_back("A: " + describe(in.a->info()));
  r.headline.push_back("B: " + describe(in.b->info()));
  if (in.null_sae) r.headline.push_back("null: " + describe(in.null_sae->info()));
  r.headline.push_back(std::to_string(ab.n_matched) + " features matched one to one by decoder cosine (" + ab.method +
                       (ab.method == "exact" ? ", optimal"
                                             : ", K=" + std::to_string(ab.candidates) + " candidates, " +
                                                   std::to_string(ab.n_fallback) + " matched outside them") +
                       ")");
  r.headline.push_back("mean matched cosine " + f3(s.mean) + " (median " + f3(s.median) + ")" +
                       (ab.method == "exact" ? ""
                                             : "; the optimum is at most " + f3(s.upper) + " (gap <= " +
                                                   fmt_num(s.gap, 2) + ")"));
  r.headline.push_back("mean max cosine A→B " + f3(mean_of(ab.best_a)) + ", B→A " + f3(mean_of(ab.best_b)));
  if (ns)
    r.headline.push_back("null A vs C: mean matched cosine " + f3(ns->mean) + ", 5th percentile " + f3(p05) + "; " +
                         std::to_string(below) + " A–B matches (" +
                         fmt_num(100.0 * static_cast<double>(below) / static_cast<double>(ab.n_matched), 3) +
                         "%) fall below it (5% expected by chance)");

  Table hist;
  hist.title = "Matched cosines";
  hist.columns = {"cosine", "A–B", ""};
  if (ns) hist.columns = {"cosine", "A–B", "", "null A–C", ""};
  const auto h = histogram(s.sorted);
  const auto hn = ns ? histogram(ns->sorted) : std::vector<int64_t>();
  const int64_t hmax = std::max<int64_t>(1, std::max(*std::max_element(h.begin(), h.end()),
                                                       hn.empty() ? 0 : *std::max_element(hn.begin(), hn.end())));
  auto bar = [&](int64_t n) { return std::string(static_cast<std::size_t>((30 * n + hmax - 1) / hmax), '#'); };
  int first = kHistogramBins, last = -1;
  for (int i = 0; i < kHistogramBins; ++i)
    if (h[static_cast<std::size_t>(i)] > 0 || (!hn.empty() && hn[static_cast<std::size_t>(i)] > 0)) {
      first = std::min(first, i);
      last = i;
    }
  for (int i = first; i <= last; ++i) {
    std::vector<std::string> row = {"[" + fmt_num(-1.0 + 2.0 * i / kHistogramBins, 2) + ", " +
                                        fmt_num(-1.0 + 2.0 * (i + 1) / kHistogramBins, 2) + ")",
                                    std::to_string(h[static_cast<std::size_t>(i)]), bar(h[static_cast<std::size_t>(i)])};
    if (ns) {
      row.push_back(std::to_string(hn[static_cast<std::size_t>(i)]));
      row.push_back(bar(hn[static_cast<std::size_t>(i)]));
    }
    hist.rows.push_back(std::move(row));
  }
  r.tables.push_back(std::move(hist));

  const std::size_t shown = std::min<std::size_t>(n_list, 20);
  Table weak;
  weak.title = "Weakest matches";
  weak.columns = {"A", "B", "cosine", "A's best B", "best cosine"};
  if (ns) weak.columns.push_back("null pct");
  for (std::size_t k = 0; k < shown; ++k) {
    const int64_t i = by_cos[by_cos.size() - 1 - k];
    const auto ii = static_cast<std::size_t>(i);
    std::vector<std::string> row = {std::to_string(i), std::to_string(ab.match_a[ii]), f3(ab.matched_cos[ii]),
                                    std::to_string(ab.best_a_idx[ii]), f3(ab.best_a[ii])};
    if (ns) row.push_back(fmt_num(percentile_of(ns->sorted, ab.matched_cos[ii]), 3) + "%");
    weak.rows.push_back(std::move(row));
  }
  if (n_list > shown) weak.notes.push_back("(" + std::to_string(n_list - shown) + " more in the export)");
  r.tables.push_back(std::move(weak));

  Table strong;
  strong.title = "Strongest matches";
  strong.columns = {"A", "B", "cosine"};
  for (std::size_t k = 0; k < std::min<std::size_t>(shown, 10); ++k) {
    const auto ii = static_cast<std::size_t>(by_cos[k]);
    strong.rows.push_back({std::to_string(by_cos[k]), std::to_string(ab.match_a[ii]), f3(ab.matched_cos[ii])});
  }
  r.tables.push_back(std::move(strong));

  Table nb;
  nb.title = "Features of B least like any feature of A (candidates for what B learned anew)";
  nb.columns = {"B", "best cosine", "to A", "matched A", "matched cosine"};
  for (std::size_t k = 0; k < std::min<std::size_t>(n_new, 20); ++k) {
    const auto j = static_cast<std::size_t>(new_b[k]);
    const int64_t m = ab.match_b[j];
    nb.rows.push_back({std::to_string(new_b[k]), f3(ab.best_b[j]), std::to_string(ab.best_b_idx[j]),
                       m >= 0 ? std::to_string(m) : "-", m >= 0 ? f3(ab.matched_cos[static_cast<std::size_t>(m)]) : "-"});
  }
  r.tables.push_back(std::move(nb));

  if (!lone.empty()) {
    Table t;
    t.title = "Features of A without a partner (A has " + std::to_string(ab.n_a - ab.n_matched) + " more than B)";
    t.columns = {"A", "best cosine", "to B"};
    for (std::size_t k = 0; k < std::min<std::size_t>(listed(in.top, lone.size()), 20); ++k) {
      const auto i = static_cast<std::size_t>(lone[k]);
      t.rows.push_back({std::to_string(lone[k]), f3(ab.best_a[i]), std::to_string(ab.best_a_idx[i])});
    }
    r.tables.push_back(std::move(t));
  }
  if (ab.method != "exact")
    r.warnings.push_back("d_sae above the exact limit: the matching is optimal over " + std::to_string(ab.candidates) +
                         " candidates per feature, not over all pairs; the dense optimum's mean is at most " +
                         f3(s.upper) + " (gap " + fmt_num(s.gap, 2) + ")");
}

}  // namespace aquin::sae_align
