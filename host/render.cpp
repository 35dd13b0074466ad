#include "render.hpp"

#include <algorithm>
#include <cctype>

namespace aquin::host {

std::size_t display_width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

namespace {
bool numeric_cell(const std::string& s) {
  if (s.empty()) return false;
  unsigned char c = static_cast<unsigned char>(s[0]);
  return std::isdigit(c) || ((c == '-' || c == '.') && s.size() > 1);
}
}  // namespace

void render_table(std::ostream& out, const Table& t) {
  const std::size_t ncol = t.columns.size();
  std::vector<std::size_t> width(ncol, 0);
  // A column is right-aligned (header included) when every non-empty cell in it is a number.
  std::vector<bool> right(ncol, true);
  for (std::size_t i = 0; i < ncol; ++i) width[i] = display_width(t.columns[i]);
  for (const auto& row : t.rows)
    for (std::size_t i = 0; i < ncol && i < row.size(); ++i) {
      width[i] = std::max(width[i], display_width(row[i]));
      if (!row[i].empty() && row[i] != "-" && !numeric_cell(row[i])) right[i] = false;
    }
  auto cell = [&](const std::string& s, std::size_t i) {
    std::string pad(width[i] - std::min(width[i], display_width(s)), ' ');
    if (!right[i] && i + 1 == ncol) pad.clear();  // no trailing blanks
    out << (right[i] ? pad + s : s + pad);
  };
  auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < ncol; ++i) {
      if (i) out << "  ";
      cell(i < cells.size() ? cells[i] : "", i);
    }
    out << "\n";
  };
  if (!t.title.empty()) out << t.title << "\n";
  line(t.columns);
  for (std::size_t i = 0; i < ncol; ++i) {
    if (i) out << "  ";
    for (std::size_t k = 0; k < width[i]; ++k) out << "─";
  }
  out << "\n";
  for (const auto& row : t.rows) line(row);
  for (const auto& n : t.notes) out << "  " << n << "\n";
}

void render_result(std::ostream& out, const std::string& command, const Result& r) {
  out << "aquin " << command << "\n";
  for (const auto& h : r.headline) out << "  " << h << "\n";
  for (const auto& t : r.tables) {
    out << "\n";
    render_table(out, t);
  }
  if (!r.warnings.empty()) {
    out << "\nwarnings (" << r.warnings.size() << "):\n";
    for (const auto& w : r.warnings) out << "  ! " << w << "\n";
  }
}

}  // namespace aquin::host
