//! HTTP dates (`Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`) as Unix seconds, in the three forms
//! RFC 9110 (5.6.7) asks a recipient to accept. By hand: the httpdate crate cost the module 6 KB.

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The date's seconds since the Unix epoch. `None` unless the text is one of the three forms
/// (surrounding whitespace allowed), names the weekday that date fell on, and lies in 1970-9999.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    let date = imf_fixdate(text).or_else(|| rfc850(text)).or_else(|| asctime(text))?;
    date.seconds()
}

struct Date {
    weekday: usize,
    year: i64,
    month: i64,
    day: i64,
    time: (i64, i64, i64),
}

impl Date {
    fn seconds(&self) -> Option<u64> {
        let (hour, minute, second) = self.time;
        if hour >= 24 || minute >= 60 || second >= 60 || !(1970..=9999).contains(&self.year) {
            return None;
        }
        if !(1..=12).contains(&self.month) || self.day < 1 || self.day > days_in_month(self.year, self.month) {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        // 1970-01-01 was a Thursday.
        if (days + 3).rem_euclid(7) != self.weekday as i64 {
            return None;
        }
        u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(text: &str) -> Option<Date> {
    let (weekday, rest) = text.split_once(", ")?;
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    Some(Date { weekday: position(&WEEKDAYS, weekday)?, year: number(year)?, month: month_number(month)?, day: number(day)?, time: clock(time)? })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`: a two-digit year is 1970-2069.
fn rfc850(text: &str) -> Option<Date> {
    let (weekday, rest) = text.split_once(", ")?;
    let mut parts = rest.split(' ');
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || zone != "GMT" {
        return None;
    }
    let mut d = date.split('-');
    let (day, month, year) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || day.len() != 2 || year.len() != 2 {
        return None;
    }
    let year = number(year)?;
    let year = if year < 70 { 2000 + year } else { 1900 + year };
    Some(Date { weekday: position(&LONG_WEEKDAYS, weekday)?, year, month: month_number(month)?, day: number(day)?, time: clock(time)? })
}

/// `Sun Nov  6 08:49:37 1994`: the day is two digits or a space and one.
fn asctime(text: &str) -> Option<Date> {
    let (weekday, rest) = (text.get(..3)?, text.get(3..)?);
    let rest = rest.strip_prefix(' ')?;
    let (month, rest) = (rest.get(..3)?, rest.get(3..)?.strip_prefix(' ')?);
    let (day, rest) = (rest.get(..2)?, rest.get(2..)?.strip_prefix(' ')?);
    let day = match day.strip_prefix(' ') {
        Some(one) if one.len() == 1 => one,
        _ => day,
    };
    let (time, year) = rest.split_once(' ')?;
    if year.len() != 4 {
        return None;
    }
    Some(Date { weekday: position(&WEEKDAYS, weekday)?, year: number(year)?, month: month_number(month)?, day: number(day)?, time: clock(time)? })
}

/// `08:49:37`
fn clock(text: &str) -> Option<(i64, i64, i64)> {
    let mut t = text.split(':');
    let (hour, minute, second) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || [hour, minute, second].iter().any(|part| part.len() != 2) {
        return None;
    }
    Some((number(hour)?, number(minute)?, number(second)?))
}

fn position(names: &[&str], name: &str) -> Option<usize> {
    names.iter().position(|n| *n == name)
}

fn month_number(name: &str) -> Option<i64> {
    position(&MONTHS, name).map(|i| i as i64 + 1)
}

/// Digits only: no sign, no space.
fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.bytes().try_fold(0i64, |n, b| n.checked_mul(10)?.checked_add(i64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn httpdate(text: &str) -> Option<u64> {
        Some(httpdate::parse_http_date(text).ok()?.duration_since(UNIX_EPOCH).ok()?.as_secs())
    }

    #[test]
    fn reads_what_the_httpdate_crate_reads() {
        let cases = [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
            "Tue, 14 Nov 2023 22:13:40 GMT",
            "  Tue, 14 Nov 2023 22:13:40 GMT  ",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 29 Feb 2024 12:00:00 GMT",
            "Wednesday, 09-Nov-69 08:49:37 GMT",
            "Thursday, 01-Jan-70 00:00:00 GMT",
            // Refused: wrong weekday, no such day, out of range, wrong shape or case.
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Fri, 30 Feb 2024 12:00:00 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Nov 1994 08:49:60 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT x",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:+7 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06  Nov 1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "1994-11-06T08:49:37Z",
            "",
            "soon",
            "Sün, 06 Nov 1994 08:49:37 GMT",
        ];
        for text in cases {
            assert_eq!(parse(text), httpdate(text), "{text:?}");
        }
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
    }
}
