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

    "nav.admin": "Администрирование",
    "nav.audit": "Журнал аудита",
    "nav.back": "К чатам",

    "account.title": "Учётная запись",
    "account.profile": "Профиль",
    "account.name": "Имя",
    "account.login": "Имя пользователя",
    "account.department": "Подразделение",
    "account.site": "Площадка",
    "account.roles": "Роли",
    "account.method": "Способ входа",
    "account.expires": "Сеанс действует до",
    "account.logout.title": "Выход",
    "account.logout.intro": "Завершить этот сеанс на этом устройстве.",

    "method.password+totp": "пароль и код из приложения",
    "method.password+recovery-code": "пароль и резервный код",
    "method.device-certificate": "сертификат устройства",
    "method.password": "пароль (настройка приложения)",

    "role.user": "пользователь",
    "role.admin": "администратор",
    "role.security-officer": "офицер безопасности",

    "password.title": "Смена пароля",
    "password.current": "Текущий пароль",
    "password.new": "Новый пароль",
    "password.repeat": "Новый пароль ещё раз",
    "password.hint": "Не короче 8 символов. Остальные ваши сеансы будут завершены.",
    "password.submit": "Сменить пароль",
    "password.empty": "Заполните все три поля.",
    "password.mismatch": "Новые пароли не совпадают. Введите их ещё раз.",
    "password.changed": "Пароль изменён. Остальные ваши сеансы завершены.",

    "sessions.title": "Где выполнен вход",
    "sessions.intro": "Завершите сеанс, которого вы не узнаёте, и смените пароль.",
    "sessions.current": "этот сеанс",
    "sessions.end": "Завершить",
    "sessions.end.label": "Завершить сеанс с адреса {address}",
    "sessions.created": "вход: {time}",
    "sessions.seen": "активность: {time}",
    "sessions.address.unknown": "адрес неизвестен",
    "sessions.ended": "Сеанс завершён.",
    "sessions.refresh": "Обновить",

    "codes.account.intro":
      "Резервный код заменяет код из приложения, если телефон потерян. Новые коды отменяют все прежние.",
    "codes.account.new": "Создать новые резервные коды",
    "codes.account.confirm": "Создать новые резервные коды? Прежние коды перестанут работать.",
    "codes.account.store":
      "Сохраните эти коды сейчас — в менеджере паролей или на бумаге в надёжном месте. Больше они показаны не будут, а прежние коды уже не действуют.",

    "admin.title": "Администрирование",
    "admin.accounts": "Учётные записи",
    "admin.search": "Поиск: имя пользователя или имя",
    "admin.search.submit": "Найти",
    "admin.more": "Показать ещё",
    "admin.empty": "Учётных записей не найдено",
    "admin.count": "Показано: {n}",
    "admin.disabled": "отключена",
    "admin.locked": "заблокирована",
    "admin.no.totp": "второй фактор не настроен",
    "admin.open": "Открыть {login}",
    "admin.create.title": "Новая учётная запись",
    "admin.create.login": "Имя пользователя",
    "admin.create.login.hint": "Латинские буквы, цифры, точка, дефис, подчёркивание.",
    "admin.create.password": "Начальный пароль (необязательно)",
    "admin.create.password.hint":
      "Без пароля войти нельзя, пока вы его не зададите. При первом входе пользователь настроит приложение-аутентификатор.",
    "admin.create.submit": "Создать",
    "admin.created": "Учётная запись {login} создана.",
    "admin.roles": "Роли",
    "admin.status": "Состояние",
    "admin.enabled": "включена",
    "admin.totp": "Второй фактор",
    "admin.totp.yes": "настроен",
    "admin.totp.no": "не настроен: пользователь настроит его при следующем входе",
    "admin.failures": "Неудачных входов подряд",
    "admin.lock": "Блокировка",
    "admin.locked.until": "до {time}",
    "admin.not.locked": "нет",
    "admin.sessions": "Открытые сеансы",
    "admin.no.sessions": "нет",
    "admin.disable": "Отключить",
    "admin.enable": "Включить",
    "admin.unlock": "Снять блокировку",
    "admin.reset.totp": "Сбросить второй фактор",
    "admin.roles.save": "Сохранить роли",
    "admin.password": "Новый пароль для {login}",
    "admin.password.hint": "Все сеансы пользователя завершатся.",
    "admin.password.submit": "Задать пароль",
    "admin.loading": "Загрузка…",
    "admin.confirm.disable": "Отключить {login}? Все сеансы этого пользователя завершатся сразу.",
    "admin.confirm.reset":
      "Сбросить второй фактор {login}? Сеансы завершатся; при следующем входе пользователь настроит приложение заново.",
    "admin.confirm.self": "Снять с себя роль администратора? Эта страница станет недоступна.",
    "admin.done.disable": "{login}: учётная запись отключена, сеансы завершены.",
    "admin.done.enable": "{login}: учётная запись включена.",
    "admin.done.unlock": "{login}: блокировка снята.",
    "admin.done.reset": "{login}: второй фактор сброшен, сеансы завершены.",
    "admin.done.roles": "{login}: роли сохранены.",
    "admin.done.password": "{login}: пароль задан, сеансы завершены.",

    "audit.title": "Журнал аудита",
    "audit.login": "Имя пользователя (пусто — все)",
    "audit.filter": "Показать",
    "audit.older": "Более ранние записи",
    "audit.empty": "Записей нет",
    "audit.count": "Показано записей: {n}",
    "audit.col.at": "Время",
    "audit.col.action": "Действие",
    "audit.col.outcome": "Результат",
    "audit.col.login": "Пользователь",
    "audit.col.actor": "Кем",
    "audit.col.address": "Адрес",
    "audit.col.method": "Способ",
    "audit.col.reason": "Причина",
    "audit.action.login": "вход",
    "audit.action.logout": "выход",
    "audit.action.totp-enrolled": "настройка второго фактора",
    "audit.action.password-changed": "смена пароля",
    "audit.action.recovery-codes-regenerated": "новые резервные коды",
    "audit.action.session-revoked": "сеанс завершён",
    "audit.action.account-created": "учётная запись создана",
    "audit.action.account-disabled": "учётная запись отключена",
    "audit.action.account-enabled": "учётная запись включена",
    "audit.action.account-unlocked": "блокировка снята",
    "audit.action.totp-reset": "второй фактор сброшен",
    "audit.action.roles-set": "роли изменены",
    "audit.action.password-set": "пароль задан администратором",
    "audit.action.disabled-by-directory": "отключена в справочнике",
    "audit.outcome.ok": "успешно",
    "audit.outcome.success": "успешно",
    "audit.outcome.failed": "отказ",
    "audit.outcome.enroll-totp": "нужна настройка приложения",

    "error.400": "Не принято: {message}",
    "error.403": "Отказано: {message}",
    "error.404": "Не найдено: {message}",
    "error.409": "Не выполнено: {message}",
    "error.413": "Слишком большой запрос: {message}",
    "error.server": "Ошибка на сервере ({status}). Повторите позже.",
    "error.session": "Сеанс завершён. Войдите снова.",

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

    "nav.admin": "Administration",
    "nav.audit": "Audit log",
    "nav.back": "Back to chats",

    "account.title": "Your account",
    "account.profile": "Profile",
    "account.name": "Name",
    "account.login": "Login name",
    "account.department": "Department",
    "account.site": "Plant",
    "account.roles": "Roles",
    "account.method": "Logged in with",
    "account.expires": "Session valid until",
    "account.logout.title": "Log out",
    "account.logout.intro": "End this session on this device.",

    "method.password+totp": "password and app code",
    "method.password+recovery-code": "password and recovery code",
    "method.device-certificate": "device certificate",
    "method.password": "password (setting up the app)",

    "role.user": "user",
    "role.admin": "administrator",
    "role.security-officer": "security officer",

    "password.title": "Change password",
    "password.current": "Current password",
    "password.new": "New password",
    "password.repeat": "New password again",
    "password.hint": "At least 8 characters. Your other sessions will end.",
    "password.submit": "Change password",
    "password.empty": "Fill in all three fields.",
    "password.mismatch": "The two new passwords differ. Type them again.",
    "password.changed": "Password changed. Your other sessions have ended.",

    "sessions.title": "Where you are logged in",
    "sessions.intro": "End a session you do not recognise, then change your password.",
    "sessions.current": "this session",
    "sessions.end": "End",
    "sessions.end.label": "End the session from {address}",
    "sessions.created": "logged in {time}",
    "sessions.seen": "last active {time}",
    "sessions.address.unknown": "unknown address",
    "sessions.ended": "Session ended.",
    "sessions.refresh": "Refresh",

    "codes.account.intro":
      "A recovery code stands in for the app's code if your phone is lost. New codes cancel all earlier ones.",
    "codes.account.new": "Make new recovery codes",
    "codes.account.confirm": "Make new recovery codes? Your earlier codes will stop working.",
    "codes.account.store":
      "Store these codes now — in a password manager, or on paper somewhere safe. They will not be shown again, and your earlier codes no longer work.",

    "admin.title": "Administration",
    "admin.accounts": "Accounts",
    "admin.search": "Search: login or name",
    "admin.search.submit": "Search",
    "admin.more": "Show more",
    "admin.empty": "No accounts found",
    "admin.count": "Shown: {n}",
    "admin.disabled": "disabled",
    "admin.locked": "locked",
    "admin.no.totp": "no second factor yet",
    "admin.open": "Open {login}",
    "admin.create.title": "New account",
    "admin.create.login": "Login name",
    "admin.create.login.hint": "Latin letters, digits, dot, hyphen, underscore.",
    "admin.create.password": "Initial password (optional)",
    "admin.create.password.hint":
      "Without one, nobody can log in until you set it. At the first login the user sets up an authenticator app.",
    "admin.create.submit": "Create",
    "admin.created": "Account {login} created.",
    "admin.roles": "Roles",
    "admin.status": "Status",
    "admin.enabled": "enabled",
    "admin.totp": "Second factor",
    "admin.totp.yes": "set up",
    "admin.totp.no": "not set up: the user sets it up at the next login",
    "admin.failures": "Failed logins in a row",
    "admin.lock": "Lockout",
    "admin.locked.until": "until {time}",
    "admin.not.locked": "none",
    "admin.sessions": "Open sessions",
    "admin.no.sessions": "none",
    "admin.disable": "Disable",
    "admin.enable": "Enable",
    "admin.unlock": "Unlock",
    "admin.reset.totp": "Reset second factor",
    "admin.roles.save": "Save roles",
    "admin.password": "New password for {login}",
    "admin.password.hint": "All the user's sessions end.",
    "admin.password.submit": "Set password",
    "admin.loading": "Loading…",
    "admin.confirm.disable": "Disable {login}? All of this user's sessions end at once.",
    "admin.confirm.reset":
      "Reset the second factor of {login}? Their sessions end; at the next login they set up the app again.",
    "admin.confirm.self": "Remove your own administrator role? This page will no longer open for you.",
    "admin.done.disable": "{login}: account disabled, sessions ended.",
    "admin.done.enable": "{login}: account enabled.",
    "admin.done.unlock": "{login}: lockout lifted.",
    "admin.done.reset": "{login}: second factor reset, sessions ended.",
    "admin.done.roles": "{login}: roles saved.",
    "admin.done.password": "{login}: password set, sessions ended.",

    "audit.title": "Audit log",
    "audit.login": "Login name (empty: everyone)",
    "audit.filter": "Show",
    "audit.older": "Older entries",
    "audit.empty": "No entries",
    "audit.count": "Entries shown: {n}",
    "audit.col.at": "Time",
    "audit.col.action": "Action",
    "audit.col.outcome": "Outcome",
    "audit.col.login": "User",
    "audit.col.actor": "By",
    "audit.col.address": "Address",
    "audit.col.method": "Method",
    "audit.col.reason": "Reason",
    "audit.action.login": "login",
    "audit.action.logout": "logout",
    "audit.action.totp-enrolled": "second factor set up",
    "audit.action.password-changed": "password changed",
    "audit.action.recovery-codes-regenerated": "new recovery codes",
    "audit.action.session-revoked": "session ended",
    "audit.action.account-created": "account created",
    "audit.action.account-disabled": "account disabled",
    "audit.action.account-enabled": "account enabled",
    "audit.action.account-unlocked": "lockout lifted",
    "audit.action.totp-reset": "second factor reset",
    "audit.action.roles-set": "roles changed",
    "audit.action.password-set": "password set by an administrator",
    "audit.action.disabled-by-directory": "disabled in the directory",
    "audit.outcome.ok": "ok",
    "audit.outcome.success": "ok",
    "audit.outcome.failed": "refused",
    "audit.outcome.enroll-totp": "app set-up needed",

    "error.400": "Not accepted: {message}",
    "error.403": "Refused: {message}",
    "error.404": "Not found: {message}",
    "error.409": "Not done: {message}",
    "error.413": "Too large: {message}",
    "error.server": "The server failed ({status}). Try again later.",
    "error.session": "Your session has ended. Log in again.",

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
