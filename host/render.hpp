// Terminal rendering of a Result: headline, tables, warnings.
#pragma once

#include <aquin/sdk/result.hpp>

#include <ostream>
#include <string>

namespace aquin::host {

/// Display width of UTF-8 text (code points; every glyph we print is one column wide).
std::size_t display_width(const std::string& s);

void render_table(std::ostream& out, const Table& t);
void render_result(std::ostream& out, const std::string& command, const Result& r);

}  // namespace aquin::host
