"""Word classes for the crisis detector's learned model: hand-made embeddings.

The model sees, besides character and word n-grams, which class each word belongs to
and which classes follow each other within a clause ("i" SELF, "gonna" INTENT, "end"
KILL: SELF_INTENT, INTENT_KILL). A paraphrase that uses a word the training text never
had still lands on the same class pairs, which is how the model reaches indirect
statements it was not trained on. The classes are written from general knowledge of
how danger, its means and its denials are said in English and Spanish; the corpus does
not feed them. Words are written in ordinary spelling and normalized like messages.
Pure: standard library only.
"""

from __future__ import annotations

from typing import Final

CONCEPTS: Final[dict[str, str]] = {
    "DIE": "die dying died dead death deaths gone perish grave funeral coffin buried "
    "morir muero muera muerta muerto muerte morirme morirse muriendo mori murio fallecer "
    "entierro tumba ataud velorio",
    "KILL": "kill killing killed kms unalive unalived suicide suicidal murder murdered "
    "end ending ended ctb offing suicidarme suicidarse suicidio matar matarme matarse "
    "matarlo matarla mato mate mataria asesinar terminar acabar acabo",
    "SELF": "myself me my mine i im ive id yo mi mismo misma",
    "OTHER": "him her he she them they his boss ex husband wife partner boyfriend girlfriend "
    "dad mom father mother stepdad stepmom neighbor neighbour coworker brother sister son "
    "daughter kid kids baby el ella ellos jefe esposo esposa novio novia papa mama padrastro "
    "madrastra vecino vecina hermano hermana hijo hija companero suegra suegro",
    "INTENT": "want wanna wanted wanting going gonna plan planning planned ready decided "
    "decide intend will quiero queria voy vamos pienso planeo planeando decidi listo lista "
    "dispuesto dispuesta preparado preparada",
    "WISH": "wish wished hope hoping pray praying ojala deseo desearia quisiera",
    "MEANS": "pills pill meds medication medications rope noose gun guns pistol rifle bullet "
    "bullets knife knives blade razor razors bridge roof ledge cliff train tracks traffic "
    "highway garage exhaust belt cord hang hanging hanged jump jumping poison bleach "
    "pastillas pastilla pildoras medicamentos soga cuerda pistola arma balas bala cuchillo "
    "navaja cuchilla puente azotea techo edificio vias tren carretera cinturon ahorcarme "
    "ahorcar colgarme colgar tirarme saltar veneno cloro",
    "INGEST": "took take taking swallowed swallow swallowing ate downed popped overdose "
    "overdosed ingested drank chugged tome tomo tomar trague tragar tragarme empastille "
    "sobredosis",
    "QUANTITY": "all whole entire every bunch handful lots month supply bottle pack box "
    "todas todos toda todo entero entera frasco caja bote puno monton muchas",
    "HARM": "hurt hurting harm harming cut cutting cuts burn burning burned burnt hit hitting "
    "punch punching scratch scratching bleed bleeding blood lastimar lastimarme lastimarlo "
    "dano cortar cortarme corte cortes quemar quemarme queme golpear golpearme pegarme "
    "sangre sangrar",
    "FAREWELL": "goodbye bye farewell letter letters note notes testament giving away gave "
    "last final sorry forgive adios despedida despedirme carta cartas nota notas testamento "
    "regalando regale ultima ultimo perdon perdonen",
    "BURDEN": "burden better off without weight useless worthless carga estorbo mejor sin inutil",
    "HOPELESS": "hopeless pointless point nothing tired exhausted anymore cant give up "
    "trapped escape sentido vale pena cansado cansada harto harta salida atrapado atrapada "
    "rendirme rendir",
    "SLEEP": "sleep asleep wake waking woke forever dormir dormirme despertar despierte "
    "despertarme siempre",
    "TIME": "tonight tomorrow today now soon weekend friday saturday sunday midnight hoy "
    "manana ahorita ahora pronto noche",
    "NEG": "not no never dont didnt isnt wasnt wont nope nah none nunca jamas tampoco ni "
    "nada ningun ninguna",
    "PAST": "ago years year was used back before history past attempt attempted survived "
    "recovery sober clean hace anos antes pasado intento intente sobrevivi recuperacion",
    "HYPO": "if what would should could hypothetically si seria podria",
    "JOKE": "lol lmao haha hahaha jaja jajaja jsjs xd funny joke joking kidding broma risa",
    "CHEST": "chest heart pecho corazon",
    "HEAD": "head headache migraine cabeza vision blurry vista borrosa confused confusion "
    "confundido confundida",
    "STROKE": "numb numbness drooping droopy slurred weak weakness face arm side stroke "
    "entumido entumecido adormecido cara brazo lado derrame",
    "BREATH": "breathe breathing breath air respirar respiro aire ahogo",
    "SEIZE": "seizure seizing convulsion convulsiones shaking temblando",
    "UNRESP": "unresponsive passed out fainted collapsed desmayo desmaye inconsciente responde",
    "SEVERE": "worst severe extreme terrible unbearable crushing fuerte fuertisimo horrible "
    "peor insoportable intenso",
    "BP": "bp pressure presion tension mmhg",
    "VOICES": "voices voice telling told command commands god devil demon voces voz "
    "diciendo dice ordenan manda dios diablo demonio",
}
