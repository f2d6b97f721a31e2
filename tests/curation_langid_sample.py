"""A multilingual sample for the language-ID test: 12 languages, 3 passages of several sentences.

Written for this test (not copied from a corpus), in plain everyday prose.
"""

SAMPLE = {
  "en": [
    "The river runs slowly past the old mill. In summer the children swim near the bridge, "
    "and their parents sit in the shade of the trees. Nobody remembers when the mill stopped working.",
    "Our team met on Monday to plan the next release. We agreed to fix the open bugs first and to "
    "write the documentation before adding new features. The meeting took less than an hour.",
    "She bought fresh bread, a piece of cheese and some apples at the market. On the way home it "
    "started to rain, so she waited under the roof of the bus station until the storm was over.",
  ],
  "de": [
    "Der Fluss fließt langsam an der alten Mühle vorbei. Im Sommer schwimmen die Kinder in der Nähe "
    "der Brücke, und ihre Eltern sitzen im Schatten der Bäume. Niemand weiß mehr, wann die Mühle stillstand.",
    "Unser Team hat sich am Montag getroffen, um die nächste Version zu planen. Wir haben beschlossen, "
    "zuerst die offenen Fehler zu beheben und die Dokumentation zu schreiben.",
    "Sie kaufte auf dem Markt frisches Brot, ein Stück Käse und einige Äpfel. Auf dem Heimweg begann "
    "es zu regnen, also wartete sie an der Bushaltestelle, bis das Gewitter vorüber war.",
  ],
  "fr": [
    "La rivière coule lentement devant le vieux moulin. En été, les enfants se baignent près du pont "
    "et leurs parents s'assoient à l'ombre des arbres. Personne ne se souvient quand le moulin s'est arrêté.",
    "Notre équipe s'est réunie lundi pour préparer la prochaine version. Nous avons décidé de corriger "
    "d'abord les erreurs connues et d'écrire la documentation avant d'ajouter de nouvelles fonctions.",
    "Elle a acheté du pain frais, un morceau de fromage et quelques pommes au marché. Sur le chemin du "
    "retour, il a commencé à pleuvoir, alors elle a attendu sous l'abri de l'arrêt de bus.",
  ],
  "es": [
    "El río pasa despacio junto al viejo molino. En verano los niños nadan cerca del puente y sus "
    "padres se sientan a la sombra de los árboles. Nadie recuerda cuándo dejó de funcionar el molino.",
    "Nuestro equipo se reunió el lunes para planear la próxima versión. Acordamos corregir primero "
    "los errores pendientes y escribir la documentación antes de añadir funciones nuevas.",
    "Ella compró pan fresco, un trozo de queso y algunas manzanas en el mercado. De camino a casa "
    "empezó a llover, así que esperó en la parada del autobús hasta que pasó la tormenta.",
  ],
  "it": [
    "Il fiume scorre lentamente accanto al vecchio mulino. D'estate i bambini nuotano vicino al ponte "
    "e i loro genitori siedono all'ombra degli alberi. Nessuno ricorda quando il mulino si è fermato.",
    "La nostra squadra si è riunita lunedì per pianificare la prossima versione. Abbiamo deciso di "
    "correggere prima gli errori aperti e di scrivere la documentazione prima delle nuove funzioni.",
    "Ha comprato del pane fresco, un pezzo di formaggio e alcune mele al mercato. Sulla strada di casa "
    "ha cominciato a piovere, così ha aspettato alla fermata dell'autobus finché il temporale è passato.",
  ],
  "pt": [
    "O rio corre devagar ao lado do velho moinho. No verão as crianças nadam perto da ponte e os pais "
    "sentam-se à sombra das árvores. Ninguém se lembra de quando o moinho deixou de funcionar.",
    "A nossa equipa reuniu-se na segunda-feira para planear a próxima versão. Decidimos corrigir "
    "primeiro os erros conhecidos e escrever a documentação antes de acrescentar novas funções.",
    "Ela comprou pão fresco, um pedaço de queijo e algumas maçãs no mercado. No caminho para casa "
    "começou a chover, por isso esperou na paragem do autocarro até a tempestade passar.",
  ],
  "nl": [
    "De rivier stroomt langzaam langs de oude molen. In de zomer zwemmen de kinderen bij de brug en "
    "zitten hun ouders in de schaduw van de bomen. Niemand weet meer wanneer de molen is gestopt.",
    "Ons team kwam maandag bij elkaar om de volgende versie te plannen. We spraken af eerst de open "
    "fouten op te lossen en de documentatie te schrijven voordat we nieuwe functies toevoegen.",
    "Ze kocht vers brood, een stuk kaas en een paar appels op de markt. Op weg naar huis begon het te "
    "regenen, dus wachtte ze bij de bushalte tot de storm voorbij was.",
  ],
  "ru": [
    "Река медленно течёт мимо старой мельницы. Летом дети купаются у моста, а их родители сидят в "
    "тени деревьев. Никто уже не помнит, когда мельница перестала работать.",
    "Наша команда встретилась в понедельник, чтобы спланировать следующий выпуск. Мы решили сначала "
    "исправить известные ошибки и написать документацию, а потом добавлять новые функции.",
    "Она купила на рынке свежий хлеб, кусок сыра и несколько яблок. По дороге домой начался дождь, "
    "поэтому она ждала на автобусной остановке, пока не закончилась гроза.",
  ],
  "pl": [
    "Rzeka płynie powoli obok starego młyna. Latem dzieci kąpią się przy moście, a ich rodzice "
    "siedzą w cieniu drzew. Nikt już nie pamięta, kiedy młyn przestał działać.",
    "Nasz zespół spotkał się w poniedziałek, żeby zaplanować następną wersję. Postanowiliśmy najpierw "
    "poprawić znane błędy i napisać dokumentację, a dopiero potem dodawać nowe funkcje.",
    "Kupiła na targu świeży chleb, kawałek sera i kilka jabłek. W drodze do domu zaczęło padać, więc "
    "czekała na przystanku autobusowym, aż burza minie.",
  ],
  "tr": [
    "Nehir eski değirmenin yanından yavaşça akıyor. Yazın çocuklar köprünün yakınında yüzüyor ve "
    "aileleri ağaçların gölgesinde oturuyor. Değirmenin ne zaman durduğunu kimse hatırlamıyor.",
    "Ekibimiz bir sonraki sürümü planlamak için pazartesi günü toplandı. Önce bilinen hataları "
    "düzeltmeye ve yeni özellikler eklemeden önce belgeleri yazmaya karar verdik.",
    "Pazardan taze ekmek, bir parça peynir ve birkaç elma aldı. Eve dönerken yağmur başladı, bu yüzden "
    "fırtına geçene kadar otobüs durağında bekledi.",
  ],
  "zh": [
    "河水缓缓流过那座老磨坊。夏天，孩子们在桥边游泳，父母们坐在树荫下聊天。没有人记得磨坊是什么时候停止工作的。",
    "我们的团队星期一开会，计划下一个版本。大家同意先修复已知的错误，并在添加新功能之前写好文档。会议不到一个小时就结束了。",
    "她在市场上买了新鲜的面包、一块奶酪和几个苹果。回家的路上开始下雨，她只好在公共汽车站等到暴风雨过去。",
  ],
  "ja": [
    "川は古い水車小屋のそばをゆっくりと流れています。夏には子どもたちが橋の近くで泳ぎ、親たちは木陰に座っています。水車がいつ止まったのか、誰も覚えていません。",
    "私たちのチームは月曜日に集まり、次のリリースの計画を立てました。まず既知の不具合を直し、新しい機能を追加する前に説明書を書くことにしました。",
    "彼女は市場で焼きたてのパンとチーズと林檎をいくつか買いました。帰り道で雨が降り始めたので、嵐が過ぎるまでバス停で待っていました。",
  ],
}
