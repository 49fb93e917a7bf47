// Every text the client shows, in one place: Russian first, English as the fallback.
// A key missing in the chosen language falls back to English, then to the key itself.
// Placeholders are {name}; t() substitutes them as plain text (the result goes to
// textContent, never to HTML).

const STRINGS = {
  ru: {
    "app.title": "Застава",
    "app.skip": "К сообщениям",
    "app.retry": "Повторить",
    "lang.label": "Язык",

    "login.title": "Вход",
    "login.login": "Имя пользователя",
    "login.password": "Пароль",
    "login.code": "Код из приложения (6 цифр)",
    "login.code.hint": "При первом входе оставьте пустым: приложение настраивается после входа.",
    "login.recovery": "Резервный код",
    "login.submit": "Войти",
    "login.use.recovery": "Нет телефона? Войти по резервному коду",
    "login.use.totp": "Войти с кодом из приложения",
    "login.busy": "Проверка…",
    "login.retry": "Повторите через {seconds} с.",
    "login.codes.left": "Осталось резервных кодов: {n}. Создайте новые в настройках.",
    "login.ended": "Сеанс завершён. Войдите снова.",

    "enroll.title": "Настройка двухфакторного входа",
    "enroll.intro":
      "Отсканируйте QR-код приложением-аутентификатором (Яндекс Ключ, FreeOTP, Google Authenticator) или введите ключ вручную.",
    "enroll.secret": "Ключ для ручного ввода",
    "enroll.uri": "Ссылка otpauth://",
    "enroll.code": "Код из приложения",
    "enroll.submit": "Подтвердить",
    "enroll.qr": "QR-код для приложения-аутентификатора",

    "codes.title": "Резервные коды",
    "codes.intro":
      "Каждый код работает один раз, если телефон потерян. Сохраните их сейчас: больше они показаны не будут.",
    "codes.copy": "Копировать",
    "codes.copied": "Скопировано",
    "codes.download": "Скачать как файл",
    "codes.done": "Я сохранил коды",

    "nav.chats": "Чаты",
    "nav.directory": "Справочник",
    "nav.search": "Поиск",
    "nav.logout": "Выйти",
    "nav.account": "Учётная запись",

    "presence.label": "Статус",
    "presence.online": "В сети",
    "presence.busy": "Занят",
    "presence.away": "Отошёл",
    "presence.in_call": "На звонке",
    "presence.offline": "Не в сети",
    "presence.unknown": "Нет данных",
    "presence.remote": "{site}, {age}",

    "push.connecting": "Подключение…",
    "push.offline": "Нет связи с сервером. Повторная попытка…",

    "dir.search": "Поиск: имя, отдел, завод, телефон",
    "dir.department": "Отдел",
    "dir.site": "Завод",
    "dir.any": "Все",
    "dir.empty": "Никого не найдено",
    "dir.more": "Показать ещё",
    "dir.total": "Найдено: {n}",
    "dir.write": "Написать",
    "dir.you": "это вы",

    "conv.new.group": "Новая группа",
    "conv.new.channel": "Новый канал",
    "conv.channels": "Каналы",
    "conv.folders": "Папка",
    "conv.folder.all": "Все чаты",
    "conv.folder.none": "Без папки",
    "conv.folder.new": "Новая папка",
    "conv.folder.name": "Название папки",
    "conv.folder.delete": "Удалить папку",
    "conv.archive.show": "Архив",
    "conv.archive.hide": "Назад к чатам",
    "conv.empty": "Чатов пока нет. Найдите коллегу в справочнике.",
    "conv.empty.archive": "Архив пуст",
    "conv.unread": "Непрочитанных: {n}",
    "conv.mentions": "Упоминаний: {n}",
    "conv.direct": "Личный чат",
    "conv.group": "Группа",
    "conv.channel": "Канал",
    "conv.members": "Участники: {n}",
    "conv.none": "Выберите чат слева или найдите коллегу в справочнике.",
    "conv.archive": "В архив",
    "conv.unarchive": "Из архива",
    "conv.leave": "Покинуть",
    "conv.leave.confirm": "Покинуть «{name}»?",
    "conv.add.members": "Добавить участников",
    "conv.details": "Название и тема",
    "conv.move": "Переместить в папку",
    "conv.you": "Вы",
    "conv.typing": "{names} печатает…",
    "conv.typing.many": "{names} печатают…",
    "conv.older": "Загрузить более ранние",
    "conv.start": "Начало переписки",
    "conv.new.divider": "Новые сообщения",

    "msg.placeholder": "Сообщение (Enter — отправить, Shift+Enter — новая строка, @ — упомянуть)",
    "msg.send": "Отправить",
    "msg.attach": "Прикрепить файл",
    "msg.reply": "Ответить",
    "msg.edit": "Изменить",
    "msg.delete": "Удалить",
    "msg.delete.confirm": "Удалить сообщение?",
    "msg.deleted": "Сообщение удалено",
    "msg.edited": "изменено",
    "msg.replying": "Ответ {name}:",
    "msg.editing": "Изменение сообщения (Esc — отмена)",
    "msg.cancel": "Отмена",
    "msg.save": "Сохранить",
    "msg.reply.unknown": "ответ на сообщение",
    "msg.attachment.unavailable": "ещё не получено",
    "msg.download": "Скачать {name}",
    "msg.mentions": "Упомянуть",

    "upload.failed": "Файл не загружен: соединение прервано (возможно, файл слишком большой).",
    "upload.remove": "Убрать файл {name}",
    "upload.too.large": "Файл слишком большой: {size}, допустимо не более {cap}.",
    "upload.wait": "Дождитесь окончания загрузки файлов.",

    "search.placeholder": "Поиск по всей переписке",
    "search.in": "в «{name}»",
    "search.empty": "Ничего не найдено",
    "search.submit": "Найти",

    "dialog.create": "Создать",
    "dialog.cancel": "Отмена",
    "dialog.close": "Закрыть",
    "dialog.name": "Название",
    "dialog.topic": "Тема (необязательно)",
    "dialog.members": "Участники (имена пользователей через запятую)",
    "dialog.join": "Вступить",
    "dialog.joined": "Вы участник",
    "dialog.open": "Открыть",
    "dialog.no.channels": "Каналов пока нет",
    "dialog.channel.members": "участников: {n}",
    "dialog.add": "Добавить",

    "error.network": "Сервер недоступен. Проверьте сеть и повторите.",
    "error.generic": "Ошибка: {message}",

    "size.b": "{n} Б",
    "size.kb": "{n} КБ",
    "size.mb": "{n} МБ",
    "size.gb": "{n} ГБ",
  },
  en: {
    "app.title": "Zastava",
    "app.skip": "Skip to messages",
    "app.retry": "Try again",
    "lang.label": "Language",

    "login.title": "Log in",
    "login.login": "Login name",
    "login.password": "Password",
    "login.code": "Code from the app (6 digits)",
    "login.code.hint": "Leave it empty at your first login: the app is set up after it.",
    "login.recovery": "Recovery code",
    "login.submit": "Log in",
    "login.use.recovery": "No phone? Log in with a recovery code",
    "login.use.totp": "Log in with a code from the app",
    "login.busy": "Checking…",
    "login.retry": "Try again in {seconds} s.",
    "login.codes.left": "Recovery codes left: {n}. Make new ones in your account settings.",
    "login.ended": "Your session has ended. Log in again.",

    "enroll.title": "Set up two-factor login",
    "enroll.intro":
      "Scan the QR code with an authenticator app (Yandex Key, FreeOTP, Google Authenticator) or type the key by hand.",
    "enroll.secret": "Key to type by hand",
    "enroll.uri": "otpauth:// link",
    "enroll.code": "Code from the app",
    "enroll.submit": "Confirm",
    "enroll.qr": "QR code for the authenticator app",

    "codes.title": "Recovery codes",
    "codes.intro":
      "Each code works once, if your phone is lost. Save them now: they will not be shown again.",
    "codes.copy": "Copy",
    "codes.copied": "Copied",
    "codes.download": "Download as a file",
    "codes.done": "I have saved the codes",

    "nav.chats": "Chats",
    "nav.directory": "Directory",
    "nav.search": "Search",
    "nav.logout": "Log out",
    "nav.account": "Account",

    "presence.label": "Status",
    "presence.online": "Online",
    "presence.busy": "Busy",
    "presence.away": "Away",
    "presence.in_call": "In a call",
    "presence.offline": "Offline",
    "presence.unknown": "Unknown",
    "presence.remote": "{site}, {age}",

    "push.connecting": "Connecting…",
    "push.offline": "No connection to the server. Retrying…",

    "dir.search": "Search: name, department, plant, phone",
    "dir.department": "Department",
    "dir.site": "Plant",
    "dir.any": "All",
    "dir.empty": "Nobody found",
    "dir.more": "Show more",
    "dir.total": "Found: {n}",
    "dir.write": "Message",
    "dir.you": "you",

    "conv.new.group": "New group",
    "conv.new.channel": "New channel",
    "conv.channels": "Channels",
    "conv.folders": "Folder",
    "conv.folder.all": "All chats",
    "conv.folder.none": "No folder",
    "conv.folder.new": "New folder",
    "conv.folder.name": "Folder name",
    "conv.folder.delete": "Delete folder",
    "conv.archive.show": "Archive",
    "conv.archive.hide": "Back to chats",
    "conv.empty": "No chats yet. Find a colleague in the directory.",
    "conv.empty.archive": "The archive is empty",
    "conv.unread": "Unread: {n}",
    "conv.mentions": "Mentions: {n}",
    "conv.direct": "Direct chat",
    "conv.group": "Group",
    "conv.channel": "Channel",
    "conv.members": "Members: {n}",
    "conv.none": "Pick a chat on the left or find a colleague in the directory.",
    "conv.archive": "Archive",
    "conv.unarchive": "Unarchive",
    "conv.leave": "Leave",
    "conv.leave.confirm": "Leave “{name}”?",
    "conv.add.members": "Add members",
    "conv.details": "Name and topic",
    "conv.move": "Move to folder",
    "conv.you": "You",
    "conv.typing": "{names} is typing…",
    "conv.typing.many": "{names} are typing…",
    "conv.older": "Load older messages",
    "conv.start": "Start of the conversation",
    "conv.new.divider": "New messages",

    "msg.placeholder": "Message (Enter sends, Shift+Enter new line, @ mentions)",
    "msg.send": "Send",
    "msg.attach": "Attach a file",
    "msg.reply": "Reply",
    "msg.edit": "Edit",
    "msg.delete": "Delete",
    "msg.delete.confirm": "Delete this message?",
    "msg.deleted": "Message deleted",
    "msg.edited": "edited",
    "msg.replying": "Replying to {name}:",
    "msg.editing": "Editing a message (Esc cancels)",
    "msg.cancel": "Cancel",
    "msg.save": "Save",
    "msg.reply.unknown": "a reply to a message",
    "msg.attachment.unavailable": "not received yet",
    "msg.download": "Download {name}",
    "msg.mentions": "Mention",

    "upload.failed": "The file was not uploaded: the connection broke (perhaps it is too large).",
    "upload.remove": "Remove file {name}",
    "upload.too.large": "The file is too large: {size}; at most {cap} is allowed.",
    "upload.wait": "Wait until the files are uploaded.",

    "search.placeholder": "Search all messages",
    "search.in": "in “{name}”",
    "search.empty": "Nothing found",
    "search.submit": "Search",

    "dialog.create": "Create",
    "dialog.cancel": "Cancel",
    "dialog.close": "Close",
    "dialog.name": "Name",
    "dialog.topic": "Topic (optional)",
    "dialog.members": "Members (login names, separated by commas)",
    "dialog.join": "Join",
    "dialog.joined": "You are a member",
    "dialog.open": "Open",
    "dialog.no.channels": "No channels yet",
    "dialog.channel.members": "{n} members",
    "dialog.add": "Add",

    "error.network": "The server cannot be reached. Check the network and try again.",
    "error.generic": "Error: {message}",

    "size.b": "{n} B",
    "size.kb": "{n} KB",
    "size.mb": "{n} MB",
    "size.gb": "{n} GB",
  },
};

export const LANGUAGES = { ru: "Русский", en: "English" };
const STORAGE_KEY = "zastava.lang";

function chooseLanguage() {
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch {
    // storage may be disabled; the browser's languages decide
  }
  if (stored && stored in STRINGS) return stored;
  for (const wanted of navigator.languages || [navigator.language || "ru"]) {
    const base = String(wanted).toLowerCase().split("-")[0];
    if (base in STRINGS) return base;
  }
  return "ru";
}

export const lang = chooseLanguage();

export function setLanguage(code) {
  if (!(code in STRINGS)) return;
  try {
    localStorage.setItem(STORAGE_KEY, code);
  } catch {
    // not kept across reloads then
  }
}

export function t(key, vars) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : ""));
}

const timeFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(lang, {
  day: "numeric",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
});
const fullFormat = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "medium" });
const relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });

/** A message time: the hour today, the day and hour otherwise. */
export function formatTime(ms) {
  const when = new Date(ms);
  const now = new Date();
  return when.toDateString() === now.toDateString()
    ? timeFormat.format(when)
    : dateTimeFormat.format(when);
}

export function formatFullTime(ms) {
  return fullFormat.format(new Date(ms));
}

/** "5 minutes ago" from an age in seconds. */
export function formatAge(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return relative.format(-s, "second");
  if (s < 3600) return relative.format(-Math.round(s / 60), "minute");
  if (s < 86400) return relative.format(-Math.round(s / 3600), "hour");
  return relative.format(-Math.round(s / 86400), "day");
}

export function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return t("size.b", { n });
  const units = ["size.kb", "size.mb", "size.gb"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value < 10 ? value.toFixed(1) : Math.round(value).toString();
  return t(units[unit], { n: shown.replace(".", lang === "ru" ? "," : ".") });
}
